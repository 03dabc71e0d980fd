extension ServerMessage {
    /// Reads a message the server sent (what a client library needs). `nil` for text that is not a
    /// v1 server message; unknown error codes read as `internal` so a newer server stays readable.
    public init?(json text: String) {
        guard let document = try? JSONParser.parse(text), case .string(let type)? = document["type"],
              case .string(let callID)? = document["call_id"] ?? .string("")
        else { return nil }
        func string(_ key: String) -> String? {
            if case .string(let value)? = document[key] { value } else { nil }
        }
        func decimal(_ key: String) -> ExactDecimal? { string(key).flatMap { ExactDecimal($0) } }
        func scope() -> BudgetScope? { string("scope").flatMap(BudgetScope.init(rawValue:)) }
        func seq() -> Int64? {
            if case .number(let digits)? = document["seq"] { Int64(digits) } else { nil }
        }
        switch type {
        case "call.accepted":
            guard let callLimit = decimal("call_limit"), let monthSpent = decimal("month_spent"), let monthLimit = decimal("month_limit") else { return nil }
            self = .callAccepted(callID: callID, callLimit: callLimit, monthSpent: monthSpent, monthLimit: monthLimit)
        case "call.rejected":
            guard let reason = string("reason") else { return nil }
            self = .callRejected(callID: callID, reason: reason, spent: decimal("spent"), limit: decimal("limit"))
        case "ack":
            guard let seq = seq() else { return nil }
            self = .ack(callID: callID, seq: seq)
        case "budget.warning":
            guard let scope = scope(), let spent = decimal("spent"), let limit = decimal("limit"), let percent = decimal("percent") else { return nil }
            self = .budgetWarning(callID: callID, scope: scope, spent: spent, limit: limit, percent: percent)
        case "budget.cutoff":
            guard let scope = scope(), let spent = decimal("spent"), let limit = decimal("limit") else { return nil }
            self = .budgetCutoff(callID: callID, scope: scope, spent: spent, limit: limit)
        case "call.summary":
            guard let cost = decimal("cost"), case .object(let services)? = document["by_service"] else { return nil }
            var byService: [(service: String, cost: ExactDecimal)] = []
            for (service, value) in services {
                guard case .string(let text) = value, let serviceCost = ExactDecimal(text) else { return nil }
                byService.append((service, serviceCost))
            }
            self = .callSummary(callID: callID, cost: cost, byService: byService, revenue: decimal("revenue"),
                                paymentFee: decimal("payment_fee"), margin: decimal("margin"))
        case "error":
            guard let code = string("code") else { return nil }
            self = .error(ProtocolError(ProtocolErrorCode(rawValue: code) ?? .internal, string("message") ?? "",
                                        callID: document["call_id"] == nil ? nil : callID, seq: seq()))
        default:
            return nil
        }
    }
}
