#if canImport(Glibc)
import Glibc
#endif

/// Sets the soft open-file limit for `connections` live connections plus headroom (database
/// connections, files), within the hard limit, and returns the limit now in force.
///
/// libwebsockets sizes its per-descriptor tables by this limit, so it is lowered as well as
/// raised: containers often set it to about a billion, which lws cannot allocate.
@discardableResult
public func setOpenFileLimit(forConnections connections: Int) -> Int {
    var limit = rlimit()
    let resource = __rlimit_resource_t(RLIMIT_NOFILE.rawValue)
    guard getrlimit(resource, &limit) == 0 else { return 0 }
    let wanted = rlim_t(connections + 4_096)
    let target = min(wanted, limit.rlim_max)
    if limit.rlim_cur != target {
        limit.rlim_cur = target
        _ = setrlimit(resource, &limit)
        _ = getrlimit(resource, &limit)
    }
    return Int(limit.rlim_cur)
}
