//! Summaries of repeated runs and CPU use from `/proc/stat`.

use serde::Serialize;

/// Median, min and max of a figure over several runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Summary {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    /// Number of runs summarised.
    pub runs: usize,
}

impl Summary {
    /// Summarises `values`, ignoring non-finite ones; all-NaN when none is left.
    pub fn of(values: &[f64]) -> Self {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return Self {
                median: f64::NAN,
                min: f64::NAN,
                max: f64::NAN,
                runs: 0,
            };
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Self {
            median,
            min: v[0],
            max: v[n - 1],
            runs: n,
        }
    }
}

/// Cumulative CPU time of all cores, in `/proc/stat` ticks.
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuTimes {
    pub total: u64,
    pub idle: u64,
    pub system: u64,
    pub softirq: u64,
}

/// Reads `/proc/stat`: the lines of CPUs `0..n`, summed, or the all-CPU line for `None`
/// (all zero if it cannot be read).
pub fn cpu_times(first_cpus: Option<usize>) -> CpuTimes {
    let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let wanted: Vec<String> = match first_cpus {
        None => vec!["cpu".into()],
        Some(n) => (0..n).map(|i| format!("cpu{i}")).collect(),
    };
    let mut t = CpuTimes::default();
    for line in text.lines() {
        if line
            .split_whitespace()
            .next()
            .is_some_and(|k| wanted.iter().any(|w| w == k))
        {
            let c = parse_cpu_line(line);
            t.total += c.total;
            t.idle += c.idle;
            t.system += c.system;
            t.softirq += c.softirq;
        }
    }
    t
}

fn parse_cpu_line(line: &str) -> CpuTimes {
    // user nice system idle iowait irq softirq steal guest guest_nice
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let get = |i: usize| f.get(i).copied().unwrap_or(0);
    CpuTimes {
        // guest time is already counted in user.
        total: (0..8).map(get).sum(),
        idle: get(3) + get(4),
        system: get(2),
        softirq: get(6),
    }
}

/// CPU use between two readings, in percent of the CPUs read (100 = all of them busy).
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct CpuUse {
    pub busy_pct: f64,
    pub system_pct: f64,
    pub softirq_pct: f64,
}

/// The CPU use between `a` and `b`.
pub fn cpu_use(a: CpuTimes, b: CpuTimes) -> CpuUse {
    let total = b.total.saturating_sub(a.total).max(1) as f64;
    let pct = |x: u64, y: u64| 100.0 * y.saturating_sub(x) as f64 / total;
    CpuUse {
        busy_pct: 100.0 - pct(a.idle, b.idle),
        system_pct: pct(a.system, b.system),
        softirq_pct: pct(a.softirq, b.softirq),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_of_odd_and_even_runs() {
        let s = Summary::of(&[3.0, 1.0, 2.0]);
        assert_eq!((s.median, s.min, s.max, s.runs), (2.0, 1.0, 3.0, 3));
        assert_eq!(Summary::of(&[1.0, 4.0]).median, 2.5);
        assert!(Summary::of(&[f64::NAN]).median.is_nan());
    }
}
