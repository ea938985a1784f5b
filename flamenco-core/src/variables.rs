//! Per-platform variables and path replacement in task commands (manager-v2.md §6.5).
