//! Markdown tables of one run's figures and the verdict on each target.

use std::time::Duration;

use crate::measure::Summary;
use crate::scenarios::{Cycle, Figures, Kind};

pub fn print(figures: &Figures, rounds: usize) {
    let cycle_medians = print_cycles(figures, rounds);
    let rss_mib = print_memory(figures);
    let (cold, warm_call) = print_engine(figures);
    let scaling_ratio = print_scaling(figures);
    let concurrent_ok = print_concurrent(figures);

    println!("\n### Targets\n");
    println!("| target | measured | met |");
    println!("|---|---|---|");
    if let Some((a, b, c)) = cycle_medians {
        target(
            "cycle at least 5x faster than the reference",
            format!("{:.1}x", b / a),
            b / a >= 5.0,
        );
        target(
            "cycle at most 1.5x the native floor",
            format!("{:.2}x", a / c),
            a / c <= 1.5,
        );
    }
    if let Some(call) = warm_call {
        target(
            "warm instantiate+call below 1 ms",
            format!("{call:.3} ms"),
            call < 1.0,
        );
    }
    if let Some(cold) = cold {
        target(
            "cold start below 2 s",
            format!("{:.2} s", cold / 1e3),
            cold < 2000.0,
        );
    }
    if let Some(rss) = rss_mib {
        target(
            "peak RSS of `cniwasm add` below 50 MiB",
            format!("{rss:.1} MiB"),
            rss < 50.0,
        );
    }
    if let Some(ratio) = scaling_ratio {
        target(
            "ADD at 500 containers at most 2x ADD at 10",
            format!("{ratio:.2}x"),
            ratio <= 2.0,
        );
    }
    if let Some((ok, text)) = concurrent_ok {
        target(
            "32 concurrent ADDs all succeed, distinct addresses",
            text,
            ok,
        );
    }
}

fn target(name: &str, measured: String, met: bool) {
    println!(
        "| {name} | {measured} | {} |",
        if met { "yes" } else { "no" }
    );
}

fn spread(summary: &Summary) -> String {
    format!(
        "{:.1} ({:.1}–{:.1})",
        summary.median, summary.p10, summary.p90
    )
}

/// Prints the cycle table; returns the cycle medians of paths a, b and c.
fn print_cycles(figures: &Figures, rounds: usize) -> Option<(f64, f64, f64)> {
    println!("### Seed chain, {rounds} alternating rounds (ms: median (p10–p90), min–max)\n");
    println!("| path | ADD | DEL | cycle | cycle min–max |");
    println!("|---|---|---|---|---|");

    let mut medians = Vec::new();
    for (kind, cycles) in &figures.cycles {
        let pick = |f: fn(&Cycle) -> Duration| cycles.iter().map(f).collect::<Vec<_>>();
        let add = Summary::of(&pick(|c| c.add))?;
        let del = Summary::of(&pick(|c| c.del))?;
        let cycle = Summary::of(&pick(|c| c.cycle))?;
        println!(
            "| {} | {} | {} | {} | {:.1}–{:.1} |",
            kind.label(),
            spread(&add),
            spread(&del),
            spread(&cycle),
            cycle.min,
            cycle.max
        );
        medians.push((*kind, add.median, del.median, cycle.median));
    }

    let find = |kind: Kind| medians.iter().find(|m| m.0 == kind).copied();
    let (a, b, c) = (
        find(Kind::Cniwasm)?,
        find(Kind::Reference)?,
        find(Kind::Native)?,
    );
    println!("\n| ratio of medians | ADD | DEL | cycle |");
    println!("|---|---|---|---|");
    println!(
        "| a/b (cniwasm / reference) | {:.2} | {:.2} | {:.2} |",
        a.1 / b.1,
        a.2 / b.2,
        a.3 / b.3
    );
    println!(
        "| a/c (cniwasm / native) | {:.2} | {:.2} | {:.2} |",
        a.1 / c.1,
        a.2 / c.2,
        a.3 / c.3
    );
    Some((a.3, b.3, c.3))
}

/// Prints the peak RSS of cniwasm's timed ADDs; returns the maximum in MiB.
fn print_memory(figures: &Figures) -> Option<f64> {
    let (_, cycles) = figures
        .cycles
        .iter()
        .find(|(kind, _)| *kind == Kind::Cniwasm)?;
    let mut rss: Vec<u64> = cycles.iter().map(|c| c.add_rss_kib).collect();
    rss.sort_unstable();
    let median = *rss.get(rss.len() / 2)? as f64 / 1024.0;
    let max = *rss.last()? as f64 / 1024.0;
    println!("\n### Memory\n");
    println!(
        "Peak RSS of `cniwasm add` (wait4 ru_maxrss): median {median:.1} MiB, max {max:.1} MiB over {} ADDs.",
        rss.len()
    );
    Some(max)
}

/// Prints cold start and the engine probe; returns the cold ADD median and
/// the warm instantiate+call median, both in ms.
fn print_engine(figures: &Figures) -> (Option<f64>, Option<f64>) {
    println!("\n### Engine\n");
    println!("| measurement | ms |");
    println!("|---|---|");
    let cold = Summary::of(&figures.cold_add);
    if let Some(cold) = &cold {
        println!(
            "| cold `cniwasm add`, empty compile cache (median of {}, min–max) | {:.0} ({:.0}–{:.0}) |",
            cold.count, cold.median, cold.min, cold.max
        );
    }
    for (plugin, elapsed) in &figures.probe.compile {
        println!(
            "| compile {plugin}.wasm in process | {:.0} |",
            elapsed.as_secs_f64() * 1e3
        );
    }
    if let Some(load) = Summary::of(&figures.probe.cached_load) {
        println!(
            "| load loopback.wasm from the compile cache (median (p10–p90)) | {} |",
            spread3(&load)
        );
    }
    let call = Summary::of(&figures.probe.instantiate_call);
    if let Some(call) = &call {
        println!(
            "| new store + instantiate + loopback DEL, no host call (median (p10–p90)) | {} |",
            spread3(call)
        );
    }
    (cold.map(|c| c.median), call.map(|c| c.median))
}

fn spread3(summary: &Summary) -> String {
    format!(
        "{:.3} ({:.3}–{:.3})",
        summary.median, summary.p10, summary.p90
    )
}

/// Prints ADD latency per scale level; returns median(500) / median(10).
fn print_scaling(figures: &Figures) -> Option<f64> {
    if figures.scaling.is_empty() {
        return None;
    }
    println!("\n### Containers on the bridge (cniwasm, 10.244.0.0/16; ms: median (p10–p90))\n");
    println!("| containers | ADD | DEL |");
    println!("|---|---|---|");
    let mut medians = Vec::new();
    for level in &figures.scaling {
        let add = Summary::of(&level.adds)?;
        let del = Summary::of(&level.dels)?;
        println!(
            "| {} | {} | {} |",
            level.containers,
            spread(&add),
            spread(&del)
        );
        medians.push((level.containers, add.median));
    }
    let at = |level: usize| medians.iter().find(|m| m.0 == level).map(|m| m.1);
    Some(at(500)? / at(10)?)
}

/// Prints the concurrent run; returns whether it passed and a summary.
fn print_concurrent(figures: &Figures) -> Option<(bool, String)> {
    let concurrent = figures.concurrent.as_ref()?;
    let adds = Summary::of(&concurrent.adds)?;
    println!("\n### Concurrent ADDs on one network (cniwasm)\n");
    println!(
        "| ADDs | succeeded | distinct addresses | wall ms | per-ADD ms median (max) | DELs succeeded | DEL wall ms |"
    );
    println!("|---|---|---|---|---|---|---|");
    println!(
        "| {} | {} | {} | {:.0} | {:.0} ({:.0}) | {} | {:.0} |",
        concurrent.count,
        concurrent.succeeded,
        concurrent.distinct_addresses,
        concurrent.wall.as_secs_f64() * 1e3,
        adds.median,
        adds.max,
        concurrent.del_succeeded,
        concurrent.del_wall.as_secs_f64() * 1e3
    );
    let ok = concurrent.succeeded == concurrent.count
        && concurrent.distinct_addresses == concurrent.count;
    let text = format!(
        "{}/{} succeeded, {} distinct",
        concurrent.succeeded, concurrent.count, concurrent.distinct_addresses
    );
    Some((ok, text))
}
