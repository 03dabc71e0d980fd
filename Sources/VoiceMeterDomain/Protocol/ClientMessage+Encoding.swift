extension ClientMessage {
    /// The message as a client sends it: one compact JSON object, decimals as strings,
    /// timestamps in RFC 3339. `ClientMessageDecoder` reads it back to the same value.
    public var json: String {
        var members: [(key: String, value: JSONValue)]
        switch self {
        case .callStart(let start):
            members = [("type", .string("call.start")), ("call_id", .string(start.callID)), ("user_id", .string(start.userID))]
            if let persona = start.personaID { members.append(("persona_id", .string(persona))) }
            if let startedAt = start.startedAt { members.append(("ts", .string(startedAt.description))) }
            if let revenue = start.revenue { members.append(("revenue", .string(revenue.description))) }
            members += [("currency", .string(start.currency)), ("payment_method", .string(start.paymentMethod))]
        case .usage(let frame):
            members = [
                ("type", .string("usage")), ("call_id", .string(frame.callID)), ("seq", .number(String(frame.seq))),
                ("ts", .string(frame.usage.occurredAt.description)), ("service", .string(frame.usage.service)),
                ("operation", .string(frame.usage.operation)), ("amount", .string(frame.usage.amount.description)),
                ("unit", .string(frame.usage.unit.rawValue)),
            ]
            if let model = frame.usage.model { members.append(("model", .string(model))) }
            if let externalID = frame.externalID { members.append(("external_id", .string(externalID))) }
            if let metadataJSON = frame.metadataJSON, let metadata = try? JSONParser.parse(metadataJSON) {
                members.append(("metadata", metadata))
            }
        case .callEnd(let end):
            members = [("type", .string("call.end")), ("call_id", .string(end.callID))]
            if let endedAt = end.endedAt { members.append(("ts", .string(endedAt.description))) }
        }
        return JSONValue.object(members).serialized
    }
}
