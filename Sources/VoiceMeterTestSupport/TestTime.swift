import Foundation
import VoiceMeterDomain
import VoiceMeterStore

/// Where a test's clock starts: the present, or `VOICEMETER_TEST_NOW` (RFC 3339) when it is set,
/// so CI runs the date-sensitive suites at the edges of the calendar (a month's and a year's last
/// seconds, a daylight-saving day) with real servers whose clocks read that instant when they
/// start. A test takes every time it needs (frame stamps, periods it queries) from one clock
/// started here, never from a constant next to the present.
public enum TestTime {
    /// The instant a clock started now should read.
    public static var start: Timestamp {
        guard let text = ProcessInfo.processInfo.environment["VOICEMETER_TEST_NOW"], !text.isEmpty else { return .now }
        guard let instant = Timestamp(rfc3339: text) else {
            preconditionFailure("VOICEMETER_TEST_NOW='\(text)' is not an RFC 3339 instant (e.g. 2026-12-31T23:59:50Z)")
        }
        return instant
    }
}

public extension Timestamp {
    /// Whole Unix seconds (an instant after 1970, rounded down): what tests stamp protocol
    /// messages with.
    var wholeUnixSeconds: Int {
        Int(microsecondsSinceEpoch / 1_000_000)
    }
}
