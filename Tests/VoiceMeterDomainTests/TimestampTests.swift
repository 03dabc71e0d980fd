import Testing
import VoiceMeterDomain

@Suite("Timestamps")
struct TimestampTests {
    @Test("RFC 3339 with Z, offsets and fractions, and PostgreSQL's ISO output, parse to the same instant", arguments: [
        "2026-11-22T18:00:00Z", "2026-11-22T19:00:00+01:00", "2026-11-22T13:30:00-04:30",
        "2026-11-22 18:00:00+00", "2026-11-22T18:00:00.000000Z", "2026-11-22t18:00:00z",
    ])
    func sameInstant(text: String) {
        #expect(Timestamp(rfc3339: text) == Timestamp(rfc3339: "2026-11-22T18:00:00Z"))
    }

    @Test("Unix seconds given as an exact number keep their milliseconds")
    func unixSeconds() {
        let instant = Timestamp(unixSeconds: ExactDecimal("1795374032.134")!)
        #expect(instant?.description == "2026-11-22T19:00:32.134Z")
        #expect(instant == Timestamp(rfc3339: "2026-11-22T19:00:32.134Z"))
    }

    @Test("Unix seconds in every form land on the same microsecond", arguments: [
        ("1795374032", 1_795_374_032_000_000), ("1795374032.5", 1_795_374_032_500_000),
        ("1795374032.000001", 1_795_374_032_000_001), ("1795374032.0000019", 1_795_374_032_000_001),
        ("-1.5", -1_500_000), ("0", 0),
    ] as [(String, Int64)])
    func unixSecondsForms(text: String, micros: Int64) {
        #expect(Timestamp(unixSeconds: ExactDecimal(text)!)?.microsecondsSinceEpoch == micros)
    }

    @Test("Unix seconds beyond the microsecond range are refused, not wrapped")
    func unixSecondsOverflow() {
        #expect(Timestamp(unixSeconds: ExactDecimal("9300000000000000")!) == nil)
        #expect(Timestamp(unixSeconds: ExactDecimal("9300000000000000.5")!) == nil)
    }

    @Test("malformed or impossible timestamps are refused", arguments: [
        "", "2026-11-22", "2026-11-22T18:00:00", "2026-13-01T00:00:00Z", "2026-02-29T00:00:00Z",
        "2026-11-22T24:00:00Z", "2026-11-22T18:00:00.Z", "2026-11-22T18:00:00+25:00", "2026-11-22T18:00:00Z junk",
    ])
    func refused(text: String) {
        #expect(Timestamp(rfc3339: text) == nil)
    }

    @Test("formatting round-trips and keeps microseconds")
    func roundTrip() {
        for text in ["1970-01-01T00:00:00Z", "2024-02-29T23:59:59.999999Z", "1969-12-31T23:59:59.5Z", "2100-03-01T00:00:00.000001Z"] {
            #expect(Timestamp(rfc3339: text)?.description == text)
        }
    }

    @Test("day and month boundaries are UTC")
    func boundaries() {
        let instant = Timestamp(rfc3339: "2026-03-01T00:30:00+01:00")!
        #expect(instant.startOfDay.description == "2026-02-28T00:00:00Z")
        #expect(instant.startOfMonth.description == "2026-02-01T00:00:00Z")
    }
}
