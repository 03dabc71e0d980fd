/// An instant with microsecond precision (PostgreSQL's `timestamptz` resolution), in UTC.
public struct Timestamp: Sendable, Hashable, Comparable, CustomStringConvertible {
    public let microsecondsSinceEpoch: Int64

    public init(microsecondsSinceEpoch: Int64) {
        self.microsecondsSinceEpoch = microsecondsSinceEpoch
    }

    public static func < (lhs: Timestamp, rhs: Timestamp) -> Bool {
        lhs.microsecondsSinceEpoch < rhs.microsecondsSinceEpoch
    }

    /// Unix seconds given exactly, e.g. `1795374032.134`; digits below a microsecond are dropped.
    public init?(unixSeconds: ExactDecimal) {
        // Up to six digits after the point (whole seconds are the usual form): microseconds by one
        // multiplication, no rounding division.
        if unixSeconds.scale <= 6 {
            let (micros, overflow) = unixSeconds.significand.multipliedReportingOverflow(by: ExactDecimal.power(6 - unixSeconds.scale))
            guard !overflow, let value = Int64(exactly: micros) else { return nil }
            self.init(microsecondsSinceEpoch: value)
            return
        }
        guard let micros = try? unixSeconds.multiplied(by: ExactDecimal(1_000_000)).rounded(scale: 0, .down),
              let value = Int64(exactly: micros.significand) else { return nil }
        self.init(microsecondsSinceEpoch: value)
    }

    /// Parses RFC 3339 (`2026-11-22T18:00:00Z`, `2026-11-22T19:00:00.25+01:00`) and PostgreSQL's ISO
    /// output (`2026-11-22 18:00:00.123456+00`). Fractions beyond microseconds are dropped.
    public init?(rfc3339 text: some StringProtocol) {
        let bytes = Array(text.utf8)
        var position = 0
        func number(_ digits: Int) -> Int? {
            guard position + digits <= bytes.count else { return nil }
            var value = 0
            for byte in bytes[position..<position + digits] {
                guard byte >= 48 && byte <= 57 else { return nil }
                value = value * 10 + Int(byte - 48)
            }
            position += digits
            return value
        }
        func expect(_ characters: String) -> Bool {
            guard position < bytes.count, characters.utf8.contains(bytes[position]) else { return false }
            position += 1
            return true
        }
        guard let year = number(4), expect("-"), let month = number(2), expect("-"), let day = number(2),
              expect("Tt "), let hour = number(2), expect(":"), let minute = number(2), expect(":"),
              let second = number(2)
        else { return nil }
        var micros = 0
        if position < bytes.count, bytes[position] == UInt8(ascii: ".") {
            position += 1
            var digits = 0
            while position < bytes.count, bytes[position] >= 48 && bytes[position] <= 57 {
                if digits < 6 { micros = micros * 10 + Int(bytes[position] - 48) }
                digits += 1
                position += 1
            }
            guard digits > 0 else { return nil }
            for _ in digits..<max(digits, 6) { micros *= 10 }
        }
        var offsetSeconds = 0
        if expect("Zz") {
            offsetSeconds = 0
        } else if position < bytes.count, bytes[position] == UInt8(ascii: "+") || bytes[position] == UInt8(ascii: "-") {
            let sign = bytes[position] == UInt8(ascii: "-") ? -1 : 1
            position += 1
            guard let offsetHours = number(2) else { return nil }
            var offsetMinutes = 0
            if position < bytes.count {
                _ = expect(":")
                guard let minutes = number(2) else { return nil }
                offsetMinutes = minutes
            }
            guard offsetHours < 24, offsetMinutes < 60 else { return nil }
            offsetSeconds = sign * (offsetHours * 3600 + offsetMinutes * 60)
        } else {
            return nil
        }
        guard position == bytes.count,
              (1...12).contains(month), day >= 1, day <= Self.daysIn(month: month, year: year),
              hour < 24, minute < 60, second < 60
        else { return nil }
        let days = Self.daysSinceEpoch(year: year, month: month, day: day)
        let seconds = Int64(days) * 86_400 + Int64(hour * 3600 + minute * 60 + second) - Int64(offsetSeconds)
        self.init(microsecondsSinceEpoch: seconds * 1_000_000 + Int64(micros))
    }

    /// A day (`2026-11-01`, its midnight UTC) or an RFC 3339 instant, as people type ranges.
    public init?(dayOrInstant text: some StringProtocol) {
        guard let instant = Timestamp(rfc3339: text) ?? Timestamp(rfc3339: text + "T00:00:00Z") else { return nil }
        self = instant
    }

    /// RFC 3339 in UTC with as many fractional digits as needed: `2026-11-22T18:00:00Z`, `…:00.134Z`.
    public var description: String {
        var text: [UInt8] = []
        text.reserveCapacity(27)
        appendRFC3339(to: &text)
        return String(decoding: text, as: UTF8.self)
    }

    /// Appends `description` as ASCII to `text` (the ledger writes two per event).
    public func appendRFC3339(to text: inout [UInt8]) {
        let (days, microsOfDay) = microsecondsSinceEpoch.floorDivided(by: 86_400_000_000)
        let (year, month, day) = Self.civil(fromDays: Int(days))
        let secondsOfDay = Int(microsOfDay / 1_000_000)
        var fraction = Int(microsOfDay % 1_000_000)
        func digits(_ value: Int, _ width: Int) {
            guard value >= 0 else { return text.appendDecimal(value) }
            var divisor = 1
            for _ in 1..<width { divisor *= 10 }
            var rest = value
            if rest >= divisor * 10 { text.appendDecimal(rest / (divisor * 10)); rest %= divisor * 10 }
            while divisor > 0 {
                text.append(UInt8(ascii: "0") + UInt8(rest / divisor % 10))
                divisor /= 10
            }
        }
        digits(year, 4)
        text.append(UInt8(ascii: "-"))
        digits(month, 2)
        text.append(UInt8(ascii: "-"))
        digits(day, 2)
        text.append(UInt8(ascii: "T"))
        digits(secondsOfDay / 3600, 2)
        text.append(UInt8(ascii: ":"))
        digits(secondsOfDay / 60 % 60, 2)
        text.append(UInt8(ascii: ":"))
        digits(secondsOfDay % 60, 2)
        if fraction > 0 {
            var width = 6
            while fraction % 10 == 0 { fraction /= 10; width -= 1 }
            text.append(UInt8(ascii: "."))
            digits(fraction, width)
        }
        text.append(UInt8(ascii: "Z"))
    }

    /// Midnight UTC of this instant's day.
    public var startOfDay: Timestamp {
        Timestamp(microsecondsSinceEpoch: microsecondsSinceEpoch.floorDivided(by: 86_400_000_000).quotient * 86_400_000_000)
    }

    /// Midnight UTC of the first day of this instant's month.
    public var startOfMonth: Timestamp {
        let days = microsecondsSinceEpoch.floorDivided(by: 86_400_000_000).quotient
        let (year, month, _) = Self.civil(fromDays: Int(days))
        return Timestamp(microsecondsSinceEpoch: Int64(Self.daysSinceEpoch(year: year, month: month, day: 1)) * 86_400_000_000)
    }

    /// This instant moved by whole seconds.
    public func adding(seconds: Int64) -> Timestamp {
        Timestamp(microsecondsSinceEpoch: microsecondsSinceEpoch + seconds * 1_000_000)
    }

    /// This instant moved by whole milliseconds.
    public func adding(milliseconds: Int64) -> Timestamp {
        Timestamp(microsecondsSinceEpoch: microsecondsSinceEpoch + milliseconds * 1_000)
    }

    // MARK: Calendar (proleptic Gregorian, days from civil; Howard Hinnant's algorithms)

    static func daysSinceEpoch(year: Int, month: Int, day: Int) -> Int {
        let shiftedYear = month <= 2 ? year - 1 : year
        let era = (shiftedYear >= 0 ? shiftedYear : shiftedYear - 399) / 400
        let yearOfEra = shiftedYear - era * 400
        let dayOfYear = (153 * (month + (month > 2 ? -3 : 9)) + 2) / 5 + day - 1
        let dayOfEra = yearOfEra * 365 + yearOfEra / 4 - yearOfEra / 100 + dayOfYear
        return era * 146_097 + dayOfEra - 719_468
    }

    static func civil(fromDays days: Int) -> (year: Int, month: Int, day: Int) {
        let shifted = days + 719_468
        let era = (shifted >= 0 ? shifted : shifted - 146_096) / 146_097
        let dayOfEra = shifted - era * 146_097
        let yearOfEra = (dayOfEra - dayOfEra / 1460 + dayOfEra / 36_524 - dayOfEra / 146_096) / 365
        let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)
        let monthIndex = (5 * dayOfYear + 2) / 153
        let day = dayOfYear - (153 * monthIndex + 2) / 5 + 1
        let month = monthIndex < 10 ? monthIndex + 3 : monthIndex - 9
        return (yearOfEra + era * 400 + (month <= 2 ? 1 : 0), month, day)
    }

    static func daysIn(month: Int, year: Int) -> Int {
        switch month {
        case 2: (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 ? 29 : 28
        case 4, 6, 9, 11: 30
        default: 31
        }
    }
}

extension Int64 {
    /// Division rounding towards negative infinity, with a non-negative remainder.
    func floorDivided(by divisor: Int64) -> (quotient: Int64, remainder: Int64) {
        var quotient = self / divisor
        var remainder = self % divisor
        if remainder < 0 {
            quotient -= 1
            remainder += divisor
        }
        return (quotient, remainder)
    }
}
