//! Work over many independent items on every CPU, keeping their order: a replica's full
//! load parses and compiles each of up to a million configs on its own, and one core
//! doing it all was most of its start-up time.

/// Items per thread below which a thread is not worth starting.
const MIN_PER_THREAD: usize = 2048;

/// `f` of every item, in order, on up to `available_parallelism` threads. Blocks the
/// calling thread until all are done (a full load is off the request path).
pub fn map<T: Send, U: Send>(items: Vec<T>, f: impl Fn(T) -> U + Sync) -> Vec<U> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = cpus.min(items.len() / MIN_PER_THREAD).max(1);
    if threads == 1 {
        return items.into_iter().map(f).collect();
    }
    let total = items.len();
    let per = total.div_ceil(threads);
    let mut chunks = Vec::with_capacity(threads);
    let mut items = items.into_iter();
    for _ in 0..threads {
        chunks.push(items.by_ref().take(per).collect::<Vec<T>>());
    }
    // The input's buffer is empty now: freed before the work, not held through it (a
    // million parsed configs are a third of a gigabyte).
    drop(items);
    std::thread::scope(|s| {
        let f = &f;
        let parts: Vec<_> = chunks
            .into_iter()
            .map(|chunk| s.spawn(move || chunk.into_iter().map(f).collect::<Vec<U>>()))
            .collect();
        let mut out = Vec::with_capacity(total);
        for part in parts {
            out.extend(part.join().expect("a worker of parallel::map panicked"));
        }
        out
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn keeps_order_at_every_size() {
        for n in [0, 1, 5, super::MIN_PER_THREAD * 2 + 1, 50_000] {
            let out = super::map((0..n).collect(), |i: usize| i * 2);
            assert_eq!(out, (0..n).map(|i| i * 2).collect::<Vec<_>>(), "n = {n}");
        }
    }
}
