//! indicatif behind `schemas::Progress`: libraries report, the binary draws. Hidden when stderr
//! is not a terminal, so logs and CI stay quiet.

use std::sync::Mutex;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use schemas::{Progress, Unit};

pub struct Bar {
    bar: Mutex<ProgressBar>,
}

impl Bar {
    pub fn new() -> Self {
        Bar {
            bar: Mutex::new(ProgressBar::hidden()),
        }
    }

    /// The underlying bar, for commands that draw their own fields.
    #[allow(dead_code)]
    pub fn bar(&self) -> ProgressBar {
        self.bar.lock().unwrap().clone()
    }
}

impl Default for Bar {
    fn default() -> Self {
        Bar::new()
    }
}

fn style(total: Option<u64>, unit: Unit) -> ProgressStyle {
    let template = match (total.is_some(), unit) {
        (true, Unit::Bytes) => {
            "{prefix} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {bytes_per_sec} ETA {eta} {msg}"
        }
        (false, Unit::Bytes) => "{prefix} [{elapsed_precise}] {spinner} {bytes} {bytes_per_sec} {msg}",
        (true, Unit::Items) => {
            "{prefix} [{elapsed_precise}] {wide_bar} {human_pos}/{human_len} {per_sec} ETA {eta} {msg}"
        }
        (false, Unit::Items) => "{prefix} [{elapsed_precise}] {spinner} {human_pos} {per_sec} {msg}",
    };
    ProgressStyle::with_template(template).expect("valid template")
}

impl Progress for Bar {
    fn begin(&self, what: &str, total: Option<u64>, unit: Unit) {
        let bar = match total {
            Some(t) => ProgressBar::new(t),
            None => ProgressBar::no_length(),
        };
        bar.set_draw_target(if console_is_terminal() {
            ProgressDrawTarget::stderr_with_hz(4)
        } else {
            ProgressDrawTarget::hidden()
        });
        bar.set_style(style(total, unit));
        bar.set_prefix(what.to_owned());
        bar.enable_steady_tick(Duration::from_millis(250));
        let mut slot = self.bar.lock().unwrap();
        slot.finish_and_clear();
        *slot = bar;
    }
    fn advance(&self, delta: u64) {
        self.bar.lock().unwrap().inc(delta);
    }
    fn message(&self, msg: &str) {
        self.bar.lock().unwrap().set_message(msg.to_owned());
    }
    fn finish(&self) {
        self.bar.lock().unwrap().finish_and_clear();
    }
}

fn console_is_terminal() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal()
}
