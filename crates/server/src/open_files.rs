//! The process's open-file limit against `server.max_connections`.
//!
//! Every connection is a descriptor, and so are the store's files, the event log's segments
//! and the outbound connections (PostgreSQL, NATS, webhooks). Many systems start processes
//! with a soft limit of 1024, the default `max_connections`: a flood of connections could
//! take the descriptors the store needs next (an event-log segment roll, one more SQLite
//! reader) and fail writes instead of waiting at the connection cap. So at start the soft
//! limit is raised to the hard limit (what servers commonly do; raising it needs no
//! privilege), and if that still leaves fewer than [`SPARE`] descriptors beside the ones
//! already open and the connections, the connection cap is lowered to fit.

/// Descriptors kept free beside those open at start and the connections: new segments,
/// readers opened on demand, outbound connections.
pub const SPARE: u64 = 256;

/// The fewest connections a cap leaves (a limit this low is a misconfigured host; the server
/// still serves).
const MIN_CONNECTIONS: usize = 16;

/// Raises the soft open-file limit to the hard one; answers the soft limit in force after
/// (`u64::MAX`: none). A refused raise keeps the old limit. (macOS refuses an unlimited soft
/// limit even under an unlimited hard one: there it is raised to 10,240, its `OPEN_MAX`.)
pub fn raise_limit() -> u64 {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let current = limit.current.unwrap_or(u64::MAX);
    let hard = limit.maximum.unwrap_or(u64::MAX);
    for target in [hard, hard.min(10_240)] {
        if target <= current {
            break;
        }
        let raised = Rlimit {
            current: (target != u64::MAX).then_some(target),
            maximum: limit.maximum,
        };
        if setrlimit(Resource::Nofile, raised).is_ok() {
            return target;
        }
    }
    current
}

/// Descriptors the process has open now (0 where neither `/proc` nor `/dev/fd` tells).
pub fn open_now() -> u64 {
    ["/proc/self/fd", "/dev/fd"]
        .iter()
        .find_map(|dir| std::fs::read_dir(dir).ok())
        .map_or(0, |entries| entries.count() as u64)
}

/// The connection cap that leaves [`SPARE`] descriptors, and `outbound` for connections the
/// server makes (its database pool, webhook deliveries), beside `open` ones under `limit`.
pub fn connection_cap(configured: usize, limit: u64, open: u64, outbound: u64) -> usize {
    let available = limit
        .saturating_sub(open)
        .saturating_sub(outbound)
        .saturating_sub(SPARE);
    let available = usize::try_from(available).unwrap_or(usize::MAX);
    configured.min(available.max(MIN_CONNECTIONS))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_leaves_the_spare_descriptors() {
        assert_eq!(connection_cap(1024, u64::MAX, 40, 0), 1024);
        assert_eq!(connection_cap(1024, 524_288, 40, 24), 1024);
        assert_eq!(
            connection_cap(1024, 1024, 40, 0),
            1024 - 40 - SPARE as usize
        );
        assert_eq!(
            connection_cap(1024, 1024, 40, 24),
            1024 - 40 - 24 - SPARE as usize
        );
        assert_eq!(connection_cap(100, 1024, 40, 24), 100);
        assert_eq!(connection_cap(1024, 200, 40, 0), MIN_CONNECTIONS);
    }

    #[test]
    fn the_soft_limit_is_raised_to_the_hard_one() {
        use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
        let before = getrlimit(Resource::Nofile);
        // Lowered first where it can be, so the raise has something to do.
        let low = Rlimit {
            current: Some(before.current.unwrap_or(4096).min(512)),
            maximum: before.maximum,
        };
        let _ = setrlimit(Resource::Nofile, low);
        let limit = raise_limit();
        let now = getrlimit(Resource::Nofile);
        assert_eq!(limit, now.current.unwrap_or(u64::MAX));
        if cfg!(target_os = "linux") {
            assert_eq!(now.current, now.maximum);
        }
        assert!(limit >= before.current.unwrap_or(u64::MAX).min(512));
        assert!(open_now() > 0);
    }
}
