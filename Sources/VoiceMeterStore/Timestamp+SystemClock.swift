#if canImport(Glibc)
import Glibc
#endif
import VoiceMeterDomain

extension Timestamp {
    /// The wall-clock time now (`CLOCK_REALTIME`); the domain itself never reads a clock.
    public static var now: Timestamp {
        var spec = timespec()
        clock_gettime(CLOCK_REALTIME, &spec)
        return Timestamp(microsecondsSinceEpoch: Int64(spec.tv_sec) * 1_000_000 + Int64(spec.tv_nsec) / 1_000)
    }
}
