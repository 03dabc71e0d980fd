import VoiceMeterDomain

/// A recorded session: JSON Lines, one usage record per line with its offset from the call's
/// answer, replayed as a call.
///
/// ```
/// {"offset":"30","service":"twilio","operation":"voice_outbound","unit":"seconds","amount":"30"}
/// {"offset":20.5,"service":"cerebras","operation":"chat_completion","model":"llama3.1-8b","unit":"input_tokens","amount":6000}
/// {"type":"call.end","offset":"300"}
/// ```
/// `offset` is in seconds (number or decimal string, up to millisecond precision). An optional
/// `call.end` line sets when the call hangs up (default: the last record's offset). Blank lines
/// and lines starting with `#` are skipped.
public enum ReplayFile {
    public struct Failure: Error, CustomStringConvertible {
        public var line: Int
        public var reason: String
        public var description: String { "line \(line): \(reason)" }
    }

    public static func parse(_ text: String, personaID: String = "replay", revenue: ExactDecimal) throws(Failure) -> CallScript {
        var usage: [ScriptedUsage] = []
        var end: Int64?
        for (index, rawLine) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = rawLine.trimmingWhitespace
            guard !line.isEmpty, !line.hasPrefix("#") else { continue }
            let number = index + 1
            guard let record = try? JSONParser.parse(String(line)), case .object = record else {
                throw Failure(line: number, reason: "not a JSON object")
            }
            func text(_ key: String) -> String? {
                switch record[key] {
                case .string(let value)?, .number(let value)?: value
                default: nil
                }
            }
            guard let offsetText = text("offset"), let offsetSeconds = ExactDecimal(offsetText), !offsetSeconds.isNegative,
                  let offset = try? offsetSeconds.multiplied(by: ExactDecimal(1_000)).rounded(scale: 0, .halfEven),
                  offset.scale == 0, let milliseconds = Int64(exactly: offset.significand)
            else { throw Failure(line: number, reason: "'offset' must be the seconds since the call was answered, e.g. \"30\" or 20.5") }
            if text("type") == "call.end" {
                end = milliseconds
                continue
            }
            guard let service = text("service"), let operation = text("operation") else {
                throw Failure(line: number, reason: "'service' and 'operation' are required, e.g. \"twilio\" and \"voice_outbound\"")
            }
            guard let unitName = text("unit"), let unit = UsageUnit(rawValue: unitName) else {
                throw Failure(line: number, reason: "'unit' must be one of \(UsageUnit.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            guard let amountText = text("amount"), let amount = ExactDecimal(amountText), !amount.isNegative else {
                throw Failure(line: number, reason: "'amount' must be a non-negative decimal (the usage since the previous record)")
            }
            usage.append(ScriptedUsage(offsetMilliseconds: milliseconds, service: service, operation: operation,
                                       model: text("model"), unit: unit, amount: amount))
        }
        guard !usage.isEmpty else { throw Failure(line: 0, reason: "no usage records; each line is one JSON object with offset, service, operation, unit and amount") }
        usage.sort { $0.offsetMilliseconds < $1.offsetMilliseconds }
        let duration = max(end ?? 0, usage.last!.offsetMilliseconds)
        return CallScript(personaID: personaID, revenue: revenue, durationMilliseconds: duration, usage: usage)
    }
}

extension Substring {
    var trimmingWhitespace: Substring {
        var text = self
        while let first = text.first, first.isWhitespace { text.removeFirst() }
        while let last = text.last, last.isWhitespace { text.removeLast() }
        return text
    }
}
