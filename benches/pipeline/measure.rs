//! Readings from /proc (memory, CPU time of a process and of the machine) and the statistics the
//! table shows.

/// Linux reports process CPU time in ticks of 1/100 s (`CLK_TCK`).
const TICKS_PER_SEC: f64 = 100.0;

/// The number on a `field: number [unit]` line of `/proc/<pid>/<file>`; NaN when it is missing.
fn proc_field(pid: u32, file: &str, field: &str) -> f64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/{file}")).unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .unwrap_or(f64::NAN)
}

/// A `kB` line of `/proc/<pid>/status` (VmHWM: peak resident set; VmRSS: current), in MiB.
pub fn proc_status_mib(pid: u32, field: &str) -> f64 {
    proc_field(pid, "status", field) / 1024.0
}

/// Bytes a process has caused to be written to storage so far (`write_bytes` of /proc/<pid>/io:
/// counted when a page cache page turns dirty, so a page rewritten after it was synced counts
/// again, and one rewritten before that does not).
pub fn disk_bytes_written(pid: u32) -> f64 {
    proc_field(pid, "io", "write_bytes")
}

/// User + system CPU seconds a process has used so far.
pub fn cpu_seconds(pid: u32) -> f64 {
    stat_cpu_seconds(&format!("/proc/{pid}/stat"))
}

/// CPU µs per event from a difference of [`cpu_seconds`] or [`thread_cpu_seconds`]; NaN (shown
/// as n/a) below 10 ticks, where one tick more or less would change it by more than a tenth.
pub fn us_per_event(cpu_seconds: f64, events: usize) -> f64 {
    if cpu_seconds < 10.0 / TICKS_PER_SEC {
        return f64::NAN;
    }
    cpu_seconds * 1e6 / events as f64
}

/// User + system CPU seconds the calling thread has used so far.
pub fn thread_cpu_seconds() -> f64 {
    stat_cpu_seconds("/proc/thread-self/stat")
}

/// The user + system time of a `stat` file of /proc (a process's or a thread's), in seconds.
fn stat_cpu_seconds(path: &str) -> f64 {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    // Fields after the command name (which may contain spaces) start at field 3 (state).
    let Some((_, rest)) = text.rsplit_once(')') else {
        return f64::NAN;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok());
    match (tick(11), tick(12)) {
        (Some(u), Some(s)) => (u + s) / TICKS_PER_SEC,
        _ => f64::NAN,
    }
}

/// Busy and total jiffies of the whole machine (all CPUs), from `/proc/stat`.
pub fn machine_jiffies() -> (f64, f64) {
    let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(cpu) = text.lines().find(|l| l.starts_with("cpu ")) else {
        return (f64::NAN, f64::NAN);
    };
    let v: Vec<f64> = cpu
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal …; idle and iowait are not busy.
    let total: f64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0.0) + v.get(4).copied().unwrap_or(0.0);
    (total - idle, total)
}

/// Share of the machine's CPU time that was busy since `start` (a [`machine_jiffies`] reading).
pub fn machine_busy_since(start: (f64, f64)) -> f64 {
    let now = machine_jiffies();
    100.0 * (now.0 - start.0) / (now.1 - start.1)
}

/// Median, min and max of some runs.
#[derive(Clone, Copy, Debug)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub n: usize,
}

impl Spread {
    pub fn of(values: &[f64]) -> Option<Self> {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let mid = v.len() / 2;
        let median = if v.len() % 2 == 1 {
            v[mid]
        } else {
            (v[mid - 1] + v[mid]) / 2.0
        };
        Some(Self {
            median,
            min: v[0],
            max: v[v.len() - 1],
            n: v.len(),
        })
    }

    /// "1 234 (1 200–1 300)" with `digits` decimals; the range only when there are several runs.
    pub fn show(&self, digits: usize) -> String {
        if self.n > 1 {
            format!(
                "{} ({}–{})",
                num(self.median, digits),
                num(self.min, digits),
                num(self.max, digits)
            )
        } else {
            num(self.median, digits)
        }
    }
}

pub fn show(values: &[f64], digits: usize) -> String {
    Spread::of(values).map_or_else(|| "n/a".to_owned(), |s| s.show(digits))
}

/// A number with a thin space between thousands, for the table.
pub fn num(value: f64, digits: usize) -> String {
    let text = format!("{value:.digits$}");
    let (int, frac) = text.split_once('.').unwrap_or((&text, ""));
    let (sign, int) = int.strip_prefix('-').map_or(("", int), |i| ("-", i));
    let mut grouped = String::new();
    for (i, c) in int.chars().enumerate() {
        if i > 0 && (int.len() - i) % 3 == 0 {
            grouped.push('\u{202f}');
        }
        grouped.push(c);
    }
    if frac.is_empty() {
        format!("{sign}{grouped}")
    } else {
        format!("{sign}{grouped}.{frac}")
    }
}

pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}
pub fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name")?.split_once(':'))
        .map_or("unknown CPU".to_owned(), |(_, m)| m.trim().to_owned());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(String::new(), |kb| {
            format!(", {:.0} GiB RAM", kb / 1024.0 / 1024.0)
        });
    format!("{cores} cores, {model}{mem}")
}
