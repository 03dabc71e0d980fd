import VoiceMeterDomain

/// What a simulation run exercises, with the budgets it gives its users and what must hold after.
public enum Scenario: String, CaseIterable, Sendable {
    case normal
    case budgetCutoff = "budget-cutoff"
    case monthExhausted = "month-exhausted"
    case monthLimit = "month-limit"
    case reconnect
    case duplicates
    case badInput = "bad-input"

    /// One line for `--help` and the report.
    public var explanation: String {
        switch self {
        case .normal: "calls run to the end; every summary matches the database"
        case .budgetCutoff: "users have a $\(Self.cutoffCallLimit.formatted(scale: 2)) per-call limit: each call is cut off mid-call, reports its last usage and hangs up"
        case .monthExhausted: "users have a $\(Self.exhaustedMonthLimit.formatted(scale: 2)) month limit, below a call's expected cost: every call.start is refused"
        case .monthLimit: "users have a $\(Self.sharedMonthLimit.formatted(scale: 2)) month limit that their calls spend: once it is reached, running calls are cut off and new ones refused (across server nodes too)"
        case .reconnect: "each call drops its connection mid-call; the client reconnects, resends what was not acknowledged, and the call continues"
        case .duplicates: "about a quarter of the frames are sent twice; each is acknowledged and counted once"
        case .badInput: "each call also sends six malformed frames; each gets its documented error code and the call is unharmed"
        }
    }

    /// The per-call limit of `budget-cutoff` (the canonical call costs $0.4045).
    public static let cutoffCallLimit = ExactDecimal(significand: 20, scale: 2)
    /// The month limit of `month-exhausted` (a call without history is expected to cost $0.90).
    public static let exhaustedMonthLimit = ExactDecimal(significand: 50, scale: 2)
    /// The month limit of `month-limit`: a handful of calls spend it.
    public static let sharedMonthLimit = ExactDecimal(3)

    /// Chance per frame, per mille, that `duplicates` sends it twice.
    static let duplicatePerMille = 250

    /// The malformed messages `bad-input` sends for a call, each with the error code it must get.
    static func malformedMessages(callID: String, at instant: Timestamp) -> [(message: String, expected: ProtocolErrorCode)] {
        let usage = #""type":"usage","call_id":"\#(callID)","service":"twilio","operation":"voice_outbound""#
        return [
            (#"{"type":"usage","call_id":"\#(callID)","seq":"#, .invalidJSON),
            (#"{"type":"call.pause","call_id":"\#(callID)"}"#, .unknownType),
            (#"{\#(usage),"seq":900001,"ts":"\#(instant)","unit":"seconds"}"#, .missingField),
            (#"{\#(usage),"seq":900002,"ts":"\#(instant)","unit":"seconds","amount":"-30"}"#, .invalidAmount),
            (#"{\#(usage),"seq":900003,"ts":"\#(instant)","unit":"parsecs","amount":"30"}"#, .invalidUnit),
            (#"{\#(usage),"seq":900004,"ts":"yesterday","unit":"seconds","amount":"30"}"#, .invalidTimestamp),
        ]
    }
}
