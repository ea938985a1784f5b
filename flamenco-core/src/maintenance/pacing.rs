//! Pacing a long run of store batches (cleanup, clean slate, outbox purge) so that it
//! shares the store with everything else.
//!
//! Two rules, one for each kind of neighbour:
//!
//! * **Requests of this process** wait behind a batch: the embedded store has one writer,
//!   and a worker's update queued behind a delete of 1,000 finished tasks with their logs
//!   waits for all of it (in the soak, docs/performance.md, such batches put the p99 of
//!   the cleanup minutes at 40–58 ms). So each batch is sized to take about
//!   [`BATCH_TARGET`] of the writer's time: the size follows how long the last batch kept
//!   the writer (not its own wait for it), between
//!   [`MIN_BATCH`] and [`DELETE_BATCH`] ([`next_size`]).
//! * **Other processes** (a `flamenco` command beside the daemon) wait for the write lock
//!   itself: SQLite has no fair queue across processes, so the run pauses for
//!   [`BATCH_PAUSE`] after every [`BATCH_WORK`] of batches. The same pauses keep the run
//!   to about a third of the time, so that a busy farm's requests keep most of the
//!   Manager's CPU while it runs (with 250 ms of work to 150 ms of pause, the soak's
//!   cleanup minutes lost a fifth of their cycles).
//!
//! Both are for a store with one writer ([`crate::store::Store::single_writer`], the
//! embedded store). On MongoDB a batch's time is mostly its round trip, and requests do
//! not queue behind it: batches there stay at [`DELETE_BATCH`], without pauses.

use std::future::Future;
use std::time::Duration;

use crate::store::Batch;

/// The most rows one batch deletes, and the size of every batch on a store without one
/// writer (MongoDB).
pub const DELETE_BATCH: usize = 1000;
/// The fewest rows one batch deletes, however slow the store is: the run always moves on.
pub const MIN_BATCH: usize = 25;
/// The size of a run's first batch, before any has been timed.
pub const FIRST_BATCH: usize = 100;
/// How long one batch should keep the writer: a request queued behind it waits about
/// this long.
pub const BATCH_TARGET: Duration = Duration::from_millis(5);
/// A long run of batches pauses for [`BATCH_PAUSE`] after this much work (wall time,
/// its waits for the writer included)…
pub const BATCH_WORK: Duration = Duration::from_millis(100);
/// …so that another process waiting for the embedded store's write lock (a `flamenco`
/// command beside the daemon, or the daemon beside one) gets it: SQLite's busy handler
/// tries again at least every 100 ms, so a gap longer than that is always seen. Without
/// it, batches back to back kept the lock for the whole run (30 s to delete a million
/// tasks), and the other process failed after its 5 s busy timeout
/// (docs/performance.md, "Soak"). Twice [`BATCH_WORK`], so that a run takes at most a
/// third of the time: with 250 ms of work to 150 ms of pause, the p99 of a busy farm's
/// cleanup minutes was 25.8 and 27.6 ms against 15.7–18 ms in the others
/// (docs/performance.md, "The cleanup minutes").
pub const BATCH_PAUSE: Duration = Duration::from_millis(200);

/// The size of the batch after one of `size` rows that took `took`: the size that would
/// have taken [`BATCH_TARGET`] at the same speed, but at most twice and at least half the
/// last one (one slow batch, a checkpoint say, does not collapse the size), within
/// [`MIN_BATCH`]..=[`DELETE_BATCH`].
pub fn next_size(size: usize, took: Duration) -> usize {
    let size = size.clamp(MIN_BATCH, DELETE_BATCH);
    let ideal = if took.is_zero() {
        size * 2
    } else {
        let scaled = size as f64 * BATCH_TARGET.as_secs_f64() / took.as_secs_f64();
        scaled.min(usize::MAX as f64) as usize
    };
    ideal
        .clamp(size / 2, size * 2)
        .clamp(MIN_BATCH, DELETE_BATCH)
}

/// Run `batch` (given the size, it answers how many rows it did, and how long it kept the
/// store busy) until it does fewer rows than asked for, or until `stop` answers true
/// (asked after each batch: a daemon shutting down ends the run between two batches
/// instead of after the last one), paced by a [`Pacer`]; `progress` gets the running
/// total after each batch. Answers the total and whether the run was stopped.
pub(crate) async fn run<F, Fut, E>(
    single_writer: bool,
    stop: &(dyn Fn() -> bool + Sync),
    mut progress: impl FnMut(u64),
    mut batch: F,
) -> Result<(u64, bool), E>
where
    F: FnMut(usize) -> Fut,
    Fut: Future<Output = Result<Batch, E>>,
{
    let mut pacer = Pacer::new(single_writer);
    let mut total = 0;
    loop {
        let (n, over) = pacer.batch(&mut batch).await?;
        total += n;
        progress(total);
        if over {
            return Ok((total, false));
        }
        if stop() {
            return Ok((total, true));
        }
        pacer.after_batch().await;
    }
}

/// For [`run`]: never stop.
pub(crate) fn never() -> bool {
    false
}

/// Paces one run of batches: sizes them ([`next_size`]) and pauses between them
/// ([`BATCH_WORK`], [`BATCH_PAUSE`]), for a store with one writer.
pub(crate) struct Pacer {
    size: usize,
    paced: bool,
    working_since: tokio::time::Instant,
}

impl Pacer {
    /// A pacer for a run on a store with one writer (`single_writer`), or one that only
    /// cuts the run into batches of [`DELETE_BATCH`].
    pub(crate) fn new(single_writer: bool) -> Pacer {
        Pacer {
            size: if single_writer {
                FIRST_BATCH
            } else {
                DELETE_BATCH
            },
            paced: single_writer,
            working_since: tokio::time::Instant::now(),
        }
    }

    /// Run one batch of at most the current size (`batch` gets the size and answers what
    /// it did) and size the next one by how long it kept the store busy (not by its own
    /// wait for the writer: under load that wait alone would shrink the batches to the
    /// least, and the cleanup, in many more transactions, would take the writer longer in
    /// all). Answers the rows done and whether the run is over (fewer rows than asked for).
    pub(crate) async fn batch<F, Fut, E>(&mut self, batch: F) -> Result<(u64, bool), E>
    where
        F: FnOnce(usize) -> Fut,
        Fut: Future<Output = Result<Batch, E>>,
    {
        let size = self.size;
        let done = batch(size).await?;
        if self.paced {
            self.size = next_size(size, done.busy);
        }
        Ok((done.rows, (done.rows as usize) < size))
    }

    /// Called after each batch of a run that goes on: pauses once the batches since the
    /// last pause took [`BATCH_WORK`].
    pub(crate) async fn after_batch(&mut self) {
        if self.paced && self.working_since.elapsed() >= BATCH_WORK {
            tokio::time::sleep(BATCH_PAUSE).await;
            self.working_since = tokio::time::Instant::now();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_slow_batch_makes_the_next_smaller_by_half_at_most() {
        // 1,000 rows in 40 ms: 125 rows would take 5 ms, but one step halves at most.
        assert_eq!(next_size(1000, ms(40)), 500);
        assert_eq!(next_size(500, ms(20)), 250);
        assert_eq!(next_size(250, ms(10)), 125);
        // …and no lower than MIN_BATCH, however slow.
        assert_eq!(next_size(MIN_BATCH, Duration::from_secs(5)), MIN_BATCH);
        assert_eq!(next_size(40, ms(400)), MIN_BATCH);
    }

    #[test]
    fn a_quick_batch_makes_the_next_larger_by_twice_at_most() {
        assert_eq!(next_size(100, ms(1)), 200);
        assert_eq!(next_size(100, Duration::ZERO), 200);
        assert_eq!(next_size(800, Duration::from_micros(10)), DELETE_BATCH);
        // Close to the target: the size that would take the target.
        assert_eq!(next_size(400, ms(4)), 500);
        assert_eq!(next_size(400, ms(5)), 400);
    }

    #[test]
    fn the_size_settles_where_a_batch_takes_the_target() {
        // A store that deletes a row in 40 µs: 125 rows take the 5 ms target.
        let mut size = FIRST_BATCH;
        for _ in 0..20 {
            let took = Duration::from_micros(40 * size as u64);
            size = next_size(size, took);
        }
        assert_eq!(size, 125);
    }

    /// Runs `rows` rows of 100 µs each in the writer, each batch waiting as long again for
    /// it (paused, auto-advancing time): answers the sizes asked for, the totals reported
    /// and the total.
    async fn run_rows(single_writer: bool, rows: u64) -> (Vec<usize>, Vec<u64>, u64) {
        run_rows_until(single_writer, rows, &never).await
    }

    /// [`run_rows`] with a `stop` check.
    async fn run_rows_until(
        single_writer: bool,
        rows: u64,
        stop: &(dyn Fn() -> bool + Sync),
    ) -> (Vec<usize>, Vec<u64>, u64) {
        let mut asked = Vec::new();
        let mut totals = Vec::new();
        let mut left = rows;
        let (total, _) = run(
            single_writer,
            stop,
            |t| totals.push(t),
            |size| {
                asked.push(size);
                let n = left.min(size as u64);
                left -= n;
                async move {
                    // Half of it waiting for the writer, which does not count.
                    let busy = Duration::from_micros(100 * n);
                    tokio::time::sleep(busy * 2).await;
                    Ok::<Batch, ()>(Batch { rows: n, busy })
                }
            },
        )
        .await
        .expect("the run");
        (asked, totals, total)
    }

    #[tokio::test(start_paused = true)]
    async fn a_run_ends_on_a_short_batch_and_sizes_by_time() {
        let (asked, totals, total) = run_rows(true, 1_000).await;
        assert_eq!(total, 1_000);
        assert_eq!(totals.last(), Some(&1_000));
        assert_eq!(asked[0], FIRST_BATCH);
        // 50 rows take the 5 ms target.
        assert_eq!(
            asked[1], 50,
            "the second batch is sized by the first one's time"
        );
        assert!(asked[2..].iter().all(|&s| s == 50), "{asked:?}");
        assert_eq!(totals.len(), asked.len());
    }

    #[tokio::test(start_paused = true)]
    async fn a_long_run_pauses_after_its_work() {
        // 1,000,000 rows of 100 µs (and as long waiting): 200 s of batches, so a pause
        // after each BATCH_WORK of them.
        let started = tokio::time::Instant::now();
        let (_, _, total) = run_rows(true, 1_000_000).await;
        assert_eq!(total, 1_000_000);
        let paused = started.elapsed() - Duration::from_secs(200);
        let pauses = paused.as_millis() / BATCH_PAUSE.as_millis();
        let expected = 200_000 / BATCH_WORK.as_millis();
        assert!(
            (expected - 10..=expected).contains(&pauses),
            "{pauses} pauses, expected about {expected}"
        );
        // The run worked a third of the time at most.
        assert!(
            paused >= Duration::from_secs(200) * 2 * 99 / 100,
            "{paused:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_run_told_to_stop_ends_after_the_batch_in_progress() {
        // Stop is asked after each batch; it answers true from the third question on.
        let asked_stop = std::sync::atomic::AtomicUsize::new(0);
        let stop = || asked_stop.fetch_add(1, std::sync::atomic::Ordering::SeqCst) >= 2;
        let (asked, totals, total) = run_rows_until(true, 1_000_000, &stop).await;
        assert_eq!(
            asked.len(),
            3,
            "three batches, then the run ends: {asked:?}"
        );
        assert_eq!(total, asked.iter().map(|&n| n as u64).sum::<u64>());
        assert_eq!(totals.last(), Some(&total));
        assert!(total < 1_000_000);
    }

    #[tokio::test(start_paused = true)]
    async fn without_one_writer_batches_stay_whole_and_never_pause() {
        let started = tokio::time::Instant::now();
        let (asked, _, total) = run_rows(false, 5_000).await;
        assert_eq!(total, 5_000);
        // Five whole batches and the empty one that ends the run.
        assert_eq!(asked, vec![DELETE_BATCH; 6]);
        // 1 s of batches and no pause, though they ran past BATCH_WORK.
        assert_eq!(started.elapsed(), Duration::from_millis(1000));
    }
}
