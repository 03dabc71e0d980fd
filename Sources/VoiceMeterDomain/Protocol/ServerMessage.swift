/// A budget scope (protocol v1).
public enum BudgetScope: String, Sendable, CaseIterable {
    case call, day, month
}

/// A server-to-client message (protocol v1). Decimals are always sent as strings.
public enum ServerMessage: Sendable, Hashable {
    case callAccepted(callID: String, callLimit: ExactDecimal, monthSpent: ExactDecimal, monthLimit: ExactDecimal)
    case callRejected(callID: String, reason: String, spent: ExactDecimal?, limit: ExactDecimal?)
    /// Every accepted usage of the call with `seq` <= this is durably committed.
    case ack(callID: String, seq: Int64)
    case budgetWarning(callID: String, scope: BudgetScope, spent: ExactDecimal, limit: ExactDecimal, percent: ExactDecimal)
    case budgetCutoff(callID: String, scope: BudgetScope, spent: ExactDecimal, limit: ExactDecimal)
    case callSummary(callID: String, cost: ExactDecimal, byService: [(service: String, cost: ExactDecimal)],
                     revenue: ExactDecimal?, paymentFee: ExactDecimal?, margin: ExactDecimal?)
    case error(ProtocolError)

    public static func == (lhs: ServerMessage, rhs: ServerMessage) -> Bool { lhs.json == rhs.json }

    /// Budget signals: sent ahead of queued acknowledgements (acks are cumulative, so a later one
    /// loses nothing by waiting; every other message keeps its order).
    public var isUrgent: Bool {
        switch self {
        case .budgetWarning, .budgetCutoff: true
        case .callAccepted, .callRejected, .ack, .callSummary, .error: false
        }
    }
    public func hash(into hasher: inout Hasher) { hasher.combine(json) }

    /// The message as one compact JSON object.
    public var json: String {
        var writer = ObjectWriter()
        switch self {
        case .callAccepted(let callID, let callLimit, let monthSpent, let monthLimit):
            writer.string("type", "call.accepted")
            writer.string("call_id", callID)
            writer.decimal("call_limit", callLimit)
            writer.decimal("month_spent", monthSpent)
            writer.decimal("month_limit", monthLimit)
        case .callRejected(let callID, let reason, let spent, let limit):
            writer.string("type", "call.rejected")
            writer.string("call_id", callID)
            writer.string("reason", reason)
            if let spent { writer.decimal("spent", spent) }
            if let limit { writer.decimal("limit", limit) }
        case .ack(let callID, let seq):
            writer.string("type", "ack")
            writer.string("call_id", callID)
            writer.raw("seq", String(seq))
        case .budgetWarning(let callID, let scope, let spent, let limit, let percent):
            writer.string("type", "budget.warning")
            writer.string("call_id", callID)
            writer.string("scope", scope.rawValue)
            writer.decimal("spent", spent)
            writer.decimal("limit", limit)
            writer.decimal("percent", percent)
        case .budgetCutoff(let callID, let scope, let spent, let limit):
            writer.string("type", "budget.cutoff")
            writer.string("call_id", callID)
            writer.string("scope", scope.rawValue)
            writer.decimal("spent", spent)
            writer.decimal("limit", limit)
        case .callSummary(let callID, let cost, let byService, let revenue, let paymentFee, let margin):
            writer.string("type", "call.summary")
            writer.string("call_id", callID)
            writer.decimal("cost", cost)
            var services = ObjectWriter()
            for entry in byService { services.decimal(entry.service, entry.cost) }
            writer.raw("by_service", services.finished)
            if let revenue { writer.decimal("revenue", revenue) }
            if let paymentFee { writer.decimal("payment_fee", paymentFee) }
            if let margin { writer.decimal("margin", margin) }
        case .error(let error):
            writer.string("type", "error")
            writer.string("code", error.code.rawValue)
            writer.string("message", error.message)
            if let callID = error.callID { writer.string("call_id", callID) }
            if let seq = error.seq { writer.raw("seq", String(seq)) }
        }
        return writer.finished
    }
}

/// Builds a JSON object member by member.
private struct ObjectWriter {
    private var text = "{"
    private var hasMembers = false

    mutating func raw(_ key: String, _ json: String) {
        if hasMembers { text += "," }
        hasMembers = true
        JSONValue.writeString(key, to: &text)
        text += ":" + json
    }

    mutating func string(_ key: String, _ value: String) {
        var encoded = ""
        JSONValue.writeString(value, to: &encoded)
        raw(key, encoded)
    }

    mutating func decimal(_ key: String, _ value: ExactDecimal) {
        string(key, value.description)
    }

    var finished: String { text + "}" }
}
