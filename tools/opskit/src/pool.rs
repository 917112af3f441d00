//! Work on threads: a few threads taking items in turn, results in the
//! items' order ([`map`]); one call bounded in time ([`within`]).

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

/// `f` applied to every item, at most `threads` at a time (at least one),
/// the results in the items' order.
pub fn map<T: Sync, R: Send>(items: &[T], threads: usize, f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let next = AtomicUsize::new(0);
    let slots: Vec<Mutex<Option<R>>> = items.iter().map(|_| Mutex::new(None)).collect();
    std::thread::scope(|s| {
        for _ in 0..threads.clamp(1, items.len().max(1)) {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(item) = items.get(i) else { break };
                    let r = f(item);
                    *slots[i].lock().unwrap_or_else(|p| p.into_inner()) = Some(r);
                }
            });
        }
    });
    slots
        .into_iter()
        .map(|s| {
            s.into_inner()
                .unwrap_or_else(|p| p.into_inner())
                .expect("every item has a result")
        })
        .collect()
}

/// Run `f` on a thread of its own and wait at most `limit` for it.
/// `Ok(None)`: no answer in time, or `f` panicked; a late thread is left
/// behind and ends with `f` (or the process). `Err`: no thread to be had.
pub fn within<T: Send + 'static>(
    limit: std::time::Duration,
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::io::Result<Option<T>> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            let _ = tx.send(f());
        })?;
    Ok(rx.recv_timeout(limit).ok())
}

/// The cores this process may use.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_is_kept_and_every_item_runs_once() {
        let items: Vec<u64> = (0..1000).collect();
        for threads in [0, 1, 2, 7, 5000] {
            let out = map(&items, threads, |x| x * 2);
            assert_eq!(out, items.iter().map(|x| x * 2).collect::<Vec<_>>());
        }
        assert!(map(&Vec::<u8>::new(), 4, |x| *x).is_empty());
    }

    #[test]
    fn within_answers_or_gives_up_on_time() {
        use std::time::{Duration, Instant};
        assert_eq!(within(Duration::from_secs(5), "t", || 7).unwrap(), Some(7));
        let t = Instant::now();
        let late = within(Duration::from_millis(50), "t", || {
            std::thread::sleep(Duration::from_secs(5))
        });
        assert_eq!(late.unwrap(), None);
        assert!(t.elapsed() < Duration::from_secs(1));
    }
}
