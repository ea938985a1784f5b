//! Tests of the pipeline on images made with the `image` crate in a temporary folder.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use image::{DynamicImage, ImageFormat, Rgb, Rgb32FImage, RgbImage, Rgba, RgbaImage};

use super::convert::{convert_file, fit_within, ConvertError, ConvertLimits};
use super::watch::{self, is_image_path, WatchOptions};
use super::*;

fn gradient(w: u32, h: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| {
        Rgb([(x * 255 / w.max(1)) as u8, (y * 255 / h.max(1)) as u8, 128])
    })
}

fn write(dir: &Path, name: &str, image: &DynamicImage, format: ImageFormat) -> PathBuf {
    let path = dir.join(name);
    image
        .save_with_format(&path, format)
        .expect("write test image");
    path
}

fn decode_jpeg(bytes: &[u8]) -> DynamicImage {
    image::load_from_memory_with_format(bytes, ImageFormat::Jpeg).expect("output is a JPEG")
}

/// Wait until the pipeline shows `version`, or fail after `secs`.
async fn wait_for_version(images: &LatestImages, version: u64, secs: u64) -> LatestImageInfo {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(info) = images.info() {
            if info.version >= version {
                return info;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no image version {version} within {secs} s (now {:?})",
            images.info()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[test]
fn each_supported_format_is_converted() {
    let dir = tempfile::tempdir().unwrap();
    let rgb = DynamicImage::ImageRgb8(gradient(64, 48));
    let files = [
        write(dir.path(), "f.png", &rgb, ImageFormat::Png),
        write(dir.path(), "f.jpg", &rgb, ImageFormat::Jpeg),
        write(dir.path(), "f.tif", &rgb, ImageFormat::Tiff),
        write(
            dir.path(),
            "f.exr",
            &DynamicImage::ImageRgb32F(rgb.to_rgb32f()),
            ImageFormat::OpenExr,
        ),
    ];
    for path in &files {
        let out = convert_file(path, &ConvertLimits::default())
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!((out.width, out.height), (64, 48), "{}", path.display());
        let back = decode_jpeg(&out.jpeg);
        assert_eq!((back.width(), back.height()), (64, 48));
    }
}

#[test]
fn upper_case_and_long_extensions_and_content_sniffing() {
    let dir = tempfile::tempdir().unwrap();
    let rgb = DynamicImage::ImageRgb8(gradient(20, 10));
    for (name, format) in [
        ("a.PNG", ImageFormat::Png),
        ("b.jpeg", ImageFormat::Jpeg),
        ("c.TIFF", ImageFormat::Tiff),
        // A PNG reported under a misleading name is still read by its content.
        ("d.jpg", ImageFormat::Png),
        ("e_without_extension", ImageFormat::Png),
    ] {
        let path = write(dir.path(), name, &rgb, format);
        let out = convert_file(&path, &ConvertLimits::default())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!((out.width, out.height), (20, 10), "{name}");
    }
    for name in [
        "x.png", "x.PNG", "x.jpg", "x.JPEG", "x.tif", "x.Tiff", "x.exr", "x.EXR",
    ] {
        assert!(is_image_path(Path::new(name)), "{name}");
    }
    for name in ["x.txt", "x.blend", "png", "x.png.part", "x."] {
        assert!(!is_image_path(Path::new(name)), "{name}");
    }
}

#[test]
fn exr_is_tone_mapped_to_srgb() {
    let dir = tempfile::tempdir().unwrap();
    // Linear 0.5 is sRGB 188; above 1 clips to white; negative and NaN become black.
    let values = [0.5f32, 4.0, -1.0, f32::NAN];
    let img = Rgb32FImage::from_fn(32, 8, |x, _| {
        let v = values[(x / 8) as usize];
        Rgb([v, v, v])
    });
    let path = write(
        dir.path(),
        "linear.exr",
        &DynamicImage::ImageRgb32F(img),
        ImageFormat::OpenExr,
    );
    let out = convert_file(&path, &ConvertLimits::default()).expect("convert exr");
    let back = decode_jpeg(&out.jpeg).into_rgb8();
    let sample = |x: u32| i32::from(back.get_pixel(x, 4).0[0]);
    assert!((sample(4) - 188).abs() <= 4, "0.5 → {}", sample(4));
    assert!(sample(12) >= 250, "4.0 → {}", sample(12));
    assert!(sample(20) <= 5, "-1.0 → {}", sample(20));
    assert!(sample(28) <= 5, "NaN → {}", sample(28));
}

#[test]
fn transparent_pixels_are_black() {
    let dir = tempfile::tempdir().unwrap();
    let img = RgbaImage::from_fn(16, 16, |x, _| {
        if x < 8 {
            Rgba([255, 255, 255, 0])
        } else {
            Rgba([255, 255, 255, 255])
        }
    });
    let path = write(
        dir.path(),
        "alpha.png",
        &DynamicImage::ImageRgba8(img),
        ImageFormat::Png,
    );
    let back =
        decode_jpeg(&convert_file(&path, &ConvertLimits::default()).unwrap().jpeg).into_rgb8();
    assert!(back.get_pixel(2, 8).0[0] < 10);
    assert!(back.get_pixel(13, 8).0[0] > 245);
}

#[test]
fn large_images_are_scaled_into_1920_by_1080_keeping_the_aspect_ratio() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "big.png",
        &DynamicImage::ImageRgb8(gradient(4000, 3000)),
        ImageFormat::Png,
    );
    let out = convert_file(&path, &ConvertLimits::default()).unwrap();
    assert_eq!((out.width, out.height), (1440, 1080));
    let back = decode_jpeg(&out.jpeg);
    assert_eq!((back.width(), back.height()), (1440, 1080));
    // The gradient survives: left is dark red, right is bright red.
    let back = back.into_rgb8();
    assert!(back.get_pixel(5, 540).0[0] < 20);
    assert!(back.get_pixel(1434, 540).0[0] > 235);

    assert_eq!(fit_within(3840, 2160, (1920, 1080)), (1920, 1080));
    assert_eq!(fit_within(1000, 4000, (1920, 1080)), (270, 1080));
    assert_eq!(fit_within(800, 600, (1920, 1080)), (800, 600));
    assert_eq!(fit_within(100_000, 1, (1920, 1080)), (1920, 1));
}

#[test]
fn bad_and_oversized_files_are_refused_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let limits = ConvertLimits::default();

    let corrupt = dir.path().join("corrupt.png");
    let mut bytes = Vec::new();
    DynamicImage::ImageRgb8(gradient(64, 64))
        .write_to(&mut std::io::Cursor::new(&mut bytes), ImageFormat::Png)
        .unwrap();
    bytes.truncate(bytes.len() / 2);
    std::fs::write(&corrupt, &bytes).unwrap();
    assert!(matches!(
        convert_file(&corrupt, &limits),
        Err(ConvertError::Decode(_) | ConvertError::Io(_))
    ));

    let text = dir.path().join("notes.txt");
    std::fs::write(&text, "not an image").unwrap();
    assert!(matches!(
        convert_file(&text, &limits),
        Err(ConvertError::Unsupported(_))
    ));

    // 20000 pixels wide: over the 16384 limit, refused before decoding the pixels.
    let wide = write(
        dir.path(),
        "wide.png",
        &DynamicImage::ImageLuma8(image::GrayImage::new(20_000, 1)),
        ImageFormat::Png,
    );
    let err = convert_file(&wide, &limits).unwrap_err();
    assert!(matches!(err, ConvertError::OverLimits(_)), "{err}");

    let small_cap = ConvertLimits {
        max_file_size: 100,
        ..ConvertLimits::default()
    };
    let png = write(
        dir.path(),
        "ok.png",
        &DynamicImage::ImageRgb8(gradient(64, 64)),
        ImageFormat::Png,
    );
    let err = convert_file(&png, &small_cap).unwrap_err();
    assert!(
        matches!(err, ConvertError::TooLarge { max: 100, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("100 bytes"), "{err}");

    assert!(matches!(
        convert_file(dir.path(), &limits),
        Err(ConvertError::NotAFile | ConvertError::Io(_))
    ));
    assert!(matches!(
        convert_file(&dir.path().join("missing.png"), &limits),
        Err(ConvertError::Io(_))
    ));
}

#[tokio::test]
async fn the_pipeline_publishes_persists_and_skips_bad_files() {
    let data = tempfile::tempdir().unwrap();
    let renders = tempfile::tempdir().unwrap();
    let images = LatestImages::new(data.path());
    assert!(images.latest().is_none());
    assert!(!images.load_persisted(), "nothing saved yet");
    let mut events = images.subscribe();

    let first = write(
        renders.path(),
        "frame_0001.png",
        &DynamicImage::ImageRgb8(gradient(300, 200)),
        ImageFormat::Png,
    );
    images.submit(&first);
    let version = tokio::time::timeout(Duration::from_secs(20), events.next())
        .await
        .expect("an event within 20 s")
        .expect("open");
    assert_eq!(version, 1);
    let info = images.info().unwrap();
    assert_eq!((info.version, info.width, info.height), (1, 300, 200));
    assert_eq!(info.source_path, first.display().to_string());
    let latest = images.latest().unwrap();
    assert_eq!(decode_jpeg(&latest.jpeg).width(), 300);
    assert!(latest.etag.starts_with('"') && latest.etag.ends_with('"'));
    let saved = std::fs::read(data.path().join(IMAGE_FILE)).expect("saved in data_dir");
    assert_eq!(saved, latest.jpeg.as_ref());

    // A corrupt file, a too-wide one and a missing one are skipped; the image stays.
    let corrupt = renders.path().join("frame_0002.png");
    std::fs::write(&corrupt, b"\x89PNG\r\n\x1a\nnot really").unwrap();
    let wide = write(
        renders.path(),
        "frame_0003.png",
        &DynamicImage::ImageLuma8(image::GrayImage::new(20_000, 1)),
        ImageFormat::Png,
    );
    images.submit(&corrupt);
    images.submit(&wide);
    images.submit(renders.path().join("frame_0004.png"));

    // A good one after them is published as version 2: conversions run one at a time in
    // order, so had a bad file been published, version 2 would name it.
    let second = write(
        renders.path(),
        "frame_0005.jpg",
        &DynamicImage::ImageRgb8(gradient(120, 90)),
        ImageFormat::Jpeg,
    );
    images.submit(&second);
    let info = wait_for_version(&images, 2, 20).await;
    assert_eq!(info.version, 2, "bad files do not replace the image");
    assert_eq!(info.source_path, second.display().to_string());
    assert_eq!((info.width, info.height), (120, 90));

    // The next start finds the saved image and its description.
    let again = LatestImages::new(data.path());
    assert!(again.load_persisted());
    let loaded = again.info().unwrap();
    assert_eq!((loaded.width, loaded.height), (120, 90));
    assert_eq!(loaded.source_path, second.display().to_string());
    assert_eq!(loaded.updated, info.updated);
    assert_eq!(again.latest().unwrap().etag, images.latest().unwrap().etag);

    // Closing ends subscriptions; later submissions do nothing.
    images.close();
    assert_eq!(events.next().await, None);
    images.submit(&first);
    assert_eq!(images.pending(), 0);
}

#[tokio::test]
async fn a_full_queue_drops_the_oldest_path_and_never_waits() {
    let data = tempfile::tempdir().unwrap();
    let images = LatestImages::new(data.path());
    // The conversion task cannot run while this (single-threaded) test does not await.
    for i in 0..(QUEUE_CAPACITY + 10) {
        images.submit(format!("/nonexistent/frame_{i:04}.png"));
    }
    assert_eq!(images.pending(), QUEUE_CAPACITY);
    // A path already waiting is not queued twice.
    images.submit(format!("/nonexistent/frame_{:04}.png", QUEUE_CAPACITY + 9));
    assert_eq!(images.pending(), QUEUE_CAPACITY);
    // The newest path is kept when the queue is full: a real frame submitted last is
    // converted; the missing files before it are skipped.
    let renders = tempfile::tempdir().unwrap();
    let frame = write(
        renders.path(),
        "frame_9999.png",
        &DynamicImage::ImageRgb8(gradient(40, 30)),
        ImageFormat::Png,
    );
    images.submit(&frame);
    assert_eq!(images.pending(), QUEUE_CAPACITY);
    let info = wait_for_version(&images, 1, 30).await;
    assert_eq!(info.source_path, frame.display().to_string());
    // The frame was queued last, so everything before it has been taken.
    assert_eq!(images.pending(), 0);
    assert_eq!(images.info().unwrap().version, 1);
}

#[test]
fn an_unreadable_saved_image_is_ignored() {
    let data = tempfile::tempdir().unwrap();
    std::fs::write(data.path().join(IMAGE_FILE), b"garbage").unwrap();
    let images = LatestImages::new(data.path());
    assert!(!images.load_persisted());
    assert!(images.latest().is_none());
}

#[test]
fn submitting_outside_a_runtime_is_a_logged_skip() {
    let data = tempfile::tempdir().unwrap();
    let images = LatestImages::new(data.path());
    images.submit("/renders/frame.png");
    assert_eq!(images.pending(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watcher_reports_images_in_new_subfolders() {
    let data = tempfile::tempdir().unwrap();
    let watched = tempfile::tempdir().unwrap();
    let images = Arc::new(LatestImages::new(data.path()));
    let stop = tokio_util::sync::CancellationToken::new();
    let options = WatchOptions {
        quiet: Duration::from_millis(300),
        tick: Duration::from_millis(100),
    };
    let task = watch::spawn(watched.path(), images.clone(), options, stop.clone()).expect("watch");

    // A render job makes its output folders and writes a frame into them at once.
    let nested = watched.path().join("shot_010").join("render");
    std::fs::create_dir_all(&nested).unwrap();
    let frame = write(
        &nested,
        "frame_0001.PNG",
        &DynamicImage::ImageRgb8(gradient(160, 90)),
        ImageFormat::Png,
    );
    // Files without an image extension are not reported.
    std::fs::write(nested.join("render.log"), "Fra:1 Mem:12M").unwrap();
    let info = wait_for_version(&images, 1, 30).await;
    assert_eq!(info.source_path, frame.display().to_string());
    assert_eq!((info.width, info.height), (160, 90));

    // A second frame in an existing folder follows.
    let second = write(
        &nested,
        "frame_0002.exr",
        &DynamicImage::ImageRgb32F(DynamicImage::ImageRgb8(gradient(80, 45)).to_rgb32f()),
        ImageFormat::OpenExr,
    );
    let info = wait_for_version(&images, 2, 30).await;
    assert_eq!(info.source_path, second.display().to_string());

    stop.cancel();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("the watcher stops when asked")
        .expect("no panic");
    images.close();
}

#[test]
fn watching_a_missing_folder_or_a_file_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope");
    let err = watch::check_dir(&missing).unwrap_err();
    assert!(err.to_string().contains("does not exist"), "{err}");
    let file = dir.path().join("file.png");
    std::fs::write(&file, b"x").unwrap();
    let err = watch::check_dir(&file).unwrap_err();
    assert!(err.to_string().contains("not a folder"), "{err}");
    assert!(watch::check_dir(dir.path()).is_ok());
}

/// Test hook, called on the conversion thread before anything else: a file named
/// `hang-*` stands for a file on a hung network mount. The thread does not return until
/// `<path>.release` exists (or 120 s passed).
pub(super) fn hang_if_asked(path: &Path) {
    let hangs = path
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with("hang-"));
    if !hangs {
        return;
    }
    let mut release = path.as_os_str().to_owned();
    release.push(".release");
    let release = PathBuf::from(release);
    let until = std::time::Instant::now() + Duration::from_secs(120);
    while !release.exists() && std::time::Instant::now() < until {
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn release(path: &Path) {
    let mut release = path.as_os_str().to_owned();
    release.push(".release");
    std::fs::write(PathBuf::from(release), b"").unwrap();
}

fn mkfifo(path: &Path) {
    let status = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .expect("run mkfifo (coreutils)");
    assert!(status.success(), "mkfifo {}", path.display());
}

/// Wait until `cond` holds for the pipeline, or fail after `secs` naming `what`.
async fn wait_until(
    images: &LatestImages,
    secs: u64,
    what: &str,
    cond: impl Fn(&LatestImages) -> bool,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while !cond(images) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not {what} within {secs} s: {:?}, idle {}, image {:?}",
            images.stats(),
            images.is_idle(),
            images.info()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn png(dir: &Path, name: &str, w: u32, h: u32) -> PathBuf {
    write(
        dir,
        name,
        &DynamicImage::ImageRgb8(gradient(w, h)),
        ImageFormat::Png,
    )
}

#[test]
fn frame_numbers_come_from_the_last_digits_of_the_name() {
    use super::watch::frame_number;
    assert_eq!(frame_number(Path::new("/r/frame_0042.png")), Some(42));
    assert_eq!(frame_number(Path::new("shot_010_frame_0007.exr")), Some(7));
    assert_eq!(frame_number(Path::new("/r/12-34.png")), Some(34));
    assert_eq!(frame_number(Path::new("0100.png")), Some(100));
    assert_eq!(frame_number(Path::new("/r/preview.png")), None);
}

#[test]
fn a_fifo_is_never_opened() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("frame_0001.png");
    mkfifo(&fifo);
    // Opening a FIFO for reading without O_NONBLOCK would wait for a writer forever.
    let err = convert_file(&fifo, &ConvertLimits::default()).unwrap_err();
    assert!(matches!(err, ConvertError::NotAFile), "{err}");
    assert!(err.to_string().contains("FIFO"), "{err}");
    let err = convert::open_regular_file(&fifo).unwrap_err();
    assert!(matches!(err, ConvertError::NotAFile), "{err}");
    // /dev/null is a character device.
    let err = convert_file(Path::new("/dev/null"), &ConvertLimits::default()).unwrap_err();
    assert!(matches!(err, ConvertError::NotAFile), "{err}");
}

#[tokio::test]
async fn a_fifo_is_skipped_and_the_next_image_is_shown() {
    let data = tempfile::tempdir().unwrap();
    let renders = tempfile::tempdir().unwrap();
    let images = LatestImages::new(data.path());
    let fifo = renders.path().join("frame_0001.png");
    mkfifo(&fifo);
    images.submit(&fifo);
    let real = png(renders.path(), "frame_0002.png", 32, 18);
    images.submit(&real);
    let info = wait_for_version(&images, 1, 30).await;
    assert_eq!(info.source_path, real.display().to_string());
    wait_until(&images, 30, "idle", |i| i.is_idle()).await;
    let stats = images.stats();
    assert_eq!(stats.not_regular, 1, "{stats:?}");
    assert_eq!(stats.conversions, 1, "{stats:?}");
    assert_eq!(stats.published, 1, "{stats:?}");
    // close() never waits for the pipeline.
    let closing = tokio::task::spawn_blocking(move || images.close());
    tokio::time::timeout(Duration::from_secs(10), closing)
        .await
        .expect("close returns")
        .unwrap();
}

#[tokio::test]
async fn a_hung_conversion_is_abandoned_and_cannot_wedge_the_pipeline() {
    let data = tempfile::tempdir().unwrap();
    let renders = tempfile::tempdir().unwrap();
    let limits = ConvertLimits {
        max_duration: Duration::from_millis(300),
        ..ConvertLimits::default()
    };
    let images = LatestImages::with_limits(data.path(), limits);
    // As many hung files as there may be threads: each is abandoned after its time limit.
    let hung: Vec<PathBuf> = (0..MAX_CONVERSION_THREADS)
        .map(|i| png(renders.path(), &format!("hang-{i}.png"), 8, 8))
        .collect();
    for path in &hung {
        images.submit(path);
    }
    let real = png(renders.path(), "frame_0001.png", 16, 9);
    images.submit(&real);
    wait_until(&images, 30, "all hung ones abandoned", |i| {
        i.stats().timed_out == MAX_CONVERSION_THREADS as u64
    })
    .await;
    // Every thread is taken by a stuck conversion: the real frame waits (the queue holds
    // it), it is not lost.
    assert_eq!(images.conversion_threads(), MAX_CONVERSION_THREADS);
    assert!(images.info().is_none());
    // One hung file system answers: its thread ends and the real frame is converted.
    release(&hung[0]);
    let info = wait_for_version(&images, 1, 30).await;
    assert_eq!(info.source_path, real.display().to_string());
    let stats = images.stats();
    assert_eq!(
        stats.published, 1,
        "the abandoned conversion is not published"
    );
    assert_eq!(stats.timed_out, MAX_CONVERSION_THREADS as u64, "{stats:?}");

    // close() returns at once although two conversions are still stuck.
    assert!(images.conversion_threads() >= 2);
    let images = Arc::new(images);
    let closing = tokio::task::spawn_blocking({
        let images = images.clone();
        move || images.close()
    });
    tokio::time::timeout(Duration::from_secs(10), closing)
        .await
        .expect("close returns while conversions are stuck")
        .unwrap();
    for path in &hung[1..] {
        release(path);
    }
    wait_until(&images, 30, "the stuck threads ended", |i| {
        i.conversion_threads() == 0
    })
    .await;
    assert_eq!(images.stats().published, 1, "nothing published after close");
}

#[tokio::test]
async fn a_report_is_summarised_and_only_its_newest_paths_are_queued() {
    let data = tempfile::tempdir().unwrap();
    let images = LatestImages::new(data.path());
    let mut paths: Vec<String> = (0..200).map(|i| format!("/r/frame_{i:04}.png")).collect();
    paths.push("relative/frame.png".into());
    paths.push("frame\nFAKE LINE".into());
    let summary = images.submit_report("worker (1.2.3.4)", &paths);
    assert_eq!(summary.paths, 202);
    assert_eq!(summary.relative, 2);
    assert_eq!(summary.older, 200 - QUEUE_CAPACITY);
    assert_eq!(summary.queued, QUEUE_CAPACITY);
    assert_eq!(
        summary.first_skipped.as_deref(),
        Some("\"relative/frame.png\"")
    );
    assert_eq!(images.pending(), QUEUE_CAPACITY);
    assert_eq!(images.stats().dropped, 0, "nothing had to be dropped");
    images.close();
}

/// A watcher on a temporary folder, with short timings.
fn watch_fast(dir: &Path, images: &Arc<LatestImages>) -> tokio_util::sync::CancellationToken {
    let stop = tokio_util::sync::CancellationToken::new();
    let options = WatchOptions {
        quiet: Duration::from_millis(300),
        tick: Duration::from_millis(100),
    };
    watch::spawn(dir, images.clone(), options, stop.clone()).expect("watch");
    stop
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watcher_skips_a_fifo_and_shows_the_next_frame() {
    let data = tempfile::tempdir().unwrap();
    let watched = tempfile::tempdir().unwrap();
    let images = Arc::new(LatestImages::new(data.path()));
    let stop = watch_fast(watched.path(), &images);
    mkfifo(&watched.path().join("frame_0001.png"));
    wait_until(&images, 30, "the FIFO skipped", |i| {
        i.stats().not_regular == 1
    })
    .await;
    let real = png(watched.path(), "frame_0002.png", 24, 12);
    let info = wait_for_version(&images, 1, 30).await;
    assert_eq!(info.source_path, real.display().to_string());
    stop.cancel();
    let closing = tokio::task::spawn_blocking({
        let images = images.clone();
        move || images.close()
    });
    tokio::time::timeout(Duration::from_secs(10), closing)
        .await
        .expect("close returns")
        .unwrap();
}

/// What the real worker and `move-to-final` do: frames are written into
/// `…__intermediate` (each reported by the worker too), then the folder is renamed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renamed_shot_is_not_converted_again_and_its_last_frame_stays() {
    let data = tempfile::tempdir().unwrap();
    let watched = tempfile::tempdir().unwrap();
    let images = Arc::new(LatestImages::new(data.path()));
    let stop = watch_fast(watched.path(), &images);
    let intermediate = watched.path().join("shot__intermediate");
    std::fs::create_dir(&intermediate).unwrap();
    let mut frames = Vec::new();
    for frame in 1..=4 {
        frames.push(png(
            &intermediate,
            &format!("frame_{frame:04}.png"),
            40,
            20 + frame,
        ));
    }
    let last = frames[3].clone();
    wait_until(&images, 30, "the watcher's 4 frames converted", |i| {
        i.stats().conversions == 4 && i.is_idle()
    })
    .await;
    let info = images.info().unwrap();
    assert_eq!(info.source_path, last.display().to_string());
    assert_eq!(info.height, 24, "frame 4");
    // The worker's reports of the same frames (late, as 2.5 throttles them).
    images.submit_all(frames.iter().cloned());
    wait_until(&images, 30, "the worker's reports handled", |i| {
        i.stats().already_converted == 4 && i.is_idle()
    })
    .await;
    let before = images.stats();
    assert_eq!(
        before.conversions, 4,
        "each frame converted once: {before:?}"
    );
    assert_eq!(images.info().unwrap(), info);

    // move-to-final: the watcher lists the renamed folder's frames again.
    let final_dir = watched.path().join("shot");
    std::fs::rename(&intermediate, &final_dir).unwrap();
    wait_until(&images, 30, "the renamed frames seen", |i| {
        i.stats().already_converted >= before.already_converted + 4 && i.is_idle()
    })
    .await;
    let after = images.stats();
    assert_eq!(after.conversions, 4, "nothing converted again: {after:?}");
    assert_eq!(after.published, before.published);
    assert_eq!(
        images.info().unwrap(),
        info,
        "the last frame stays the image"
    );
    stop.cancel();
    images.close();
}

/// Frames that arrive all at once with the same modification time (a folder moved in
/// from elsewhere) are taken in frame order, so the last frame is the image.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_moved_in_together_end_with_the_last_frame() {
    let data = tempfile::tempdir().unwrap();
    let watched = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir_in(watched.path().parent().unwrap()).unwrap();
    let images = Arc::new(LatestImages::new(data.path()));
    let stop = watch_fast(watched.path(), &images);
    let shot = elsewhere.path().join("shot");
    std::fs::create_dir(&shot).unwrap();
    let when = std::time::SystemTime::now() - Duration::from_secs(3600);
    // Written in an order that is neither the frame order nor (likely) the hash order.
    for frame in [3u32, 1, 4, 2] {
        let path = png(&shot, &format!("frame_{frame:04}.png"), 40, 20 + frame);
        let f = std::fs::File::options().write(true).open(&path).unwrap();
        f.set_modified(when).unwrap();
    }
    let moved = watched.path().join("shot");
    std::fs::rename(&shot, &moved).unwrap();
    wait_until(&images, 30, "4 frames converted", |i| {
        i.stats().conversions == 4 && i.is_idle()
    })
    .await;
    let info = images.info().unwrap();
    assert_eq!(
        info.source_path,
        moved.join("frame_0004.png").display().to_string()
    );
    assert_eq!(info.height, 24);
    assert_eq!(images.stats().published, 4);
    stop.cancel();
    images.close();
}

#[test]
fn the_counts_are_exposed_as_metrics() {
    let stats = PipelineStats {
        submitted: 12,
        conversions: 4,
        published: 4,
        already_converted: 8,
        not_regular: 1,
        ..PipelineStats::default()
    };
    let mut reg = prometheus_client::registry::Registry::default();
    stats.register(&mut reg);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &reg).unwrap();
    for line in [
        "flamenco_latest_image_paths_queued_total 12",
        "flamenco_latest_image_conversions_total 4",
        "flamenco_latest_image_published_total 4",
        "flamenco_latest_image_timeouts_total 0",
        "flamenco_latest_image_paths_skipped_total{reason=\"already_converted\"} 8",
        "flamenco_latest_image_paths_skipped_total{reason=\"not_regular\"} 1",
        "flamenco_latest_image_paths_skipped_total{reason=\"failed\"} 0",
    ] {
        assert!(text.contains(line), "{line} in\n{text}");
    }
}

/// `move-to-final` over an existing final folder first moves the previous render aside
/// (`shot` → `shot-<timestamp>`). Those older frames, never converted by this Manager (it
/// restarted since), must not replace the new shot's last frame; nor after a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_render_moved_aside_does_not_replace_the_newest_frame() {
    let data = tempfile::tempdir().unwrap();
    let watched = tempfile::tempdir().unwrap();
    let images = Arc::new(LatestImages::new(data.path()));
    let stop = watch_fast(watched.path(), &images);
    // The previous render, written an hour ago, outside what this pipeline has seen.
    let elsewhere = tempfile::tempdir_in(watched.path().parent().unwrap()).unwrap();
    let previous = elsewhere.path().join("shot-previous");
    std::fs::create_dir(&previous).unwrap();
    let an_hour_ago = std::time::SystemTime::now() - Duration::from_secs(3600);
    for frame in 1..=3u32 {
        let path = png(&previous, &format!("frame_{frame:04}.png"), 30, 10 + frame);
        let f = std::fs::File::options().write(true).open(&path).unwrap();
        f.set_modified(an_hour_ago).unwrap();
    }
    // The new render's frame, shown.
    let shot = watched.path().join("shot");
    std::fs::create_dir(&shot).unwrap();
    let newest = png(&shot, "frame_0003.png", 40, 24);
    wait_until(&images, 30, "the new frame shown", |i| {
        i.stats().published == 1 && i.is_idle()
    })
    .await;
    // The old render arrives in the tree.
    std::fs::rename(&previous, watched.path().join("shot-previous")).unwrap();
    wait_until(&images, 30, "the old frames skipped", |i| {
        i.stats().older == 3 && i.is_idle()
    })
    .await;
    let info = images.info().unwrap();
    assert_eq!(info.source_path, newest.display().to_string());
    assert_eq!(images.stats().conversions, 1, "old frames are not decoded");
    stop.cancel();
    images.close();

    // After a restart the saved image keeps the rule.
    let again = LatestImages::new(data.path());
    assert!(again.load_persisted());
    again.submit(watched.path().join("shot-previous").join("frame_0002.png"));
    wait_until(&again, 30, "the old frame skipped", |i| {
        i.stats().older == 1 && i.is_idle()
    })
    .await;
    assert_eq!(
        again.info().unwrap().source_path,
        newest.display().to_string()
    );
    again.close();
}
