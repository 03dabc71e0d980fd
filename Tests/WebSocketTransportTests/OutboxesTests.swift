import Testing
@testable import WebSocketTransport

@Suite("Outboxes: the order messages leave a connection in")
struct OutboxesTests {
    private func drain(_ outboxes: Outboxes, _ id: Int) -> [String] {
        var sent: [String] = []
        while let (payload, _) = outboxes.next(for: id) { sent.append(String(decoding: payload, as: UTF8.self)) }
        return sent
    }

    @Test("an urgent message overtakes queued acknowledgements, never an in-order message")
    func urgentOvertakesOnlyAcknowledgements() {
        let outboxes = Outboxes(capacityPerConnection: 16)
        outboxes.open(1)
        _ = outboxes.enqueue(Array("accepted".utf8), for: 1)
        _ = outboxes.enqueue(Array("ack 3".utf8), for: 1, order: .overtakable)
        _ = outboxes.enqueue(Array("summary".utf8), for: 1)
        _ = outboxes.enqueue(Array("ack 5".utf8), for: 1, order: .overtakable)
        _ = outboxes.enqueue(Array("cutoff".utf8), for: 1, order: .urgent)
        #expect(drain(outboxes, 1) == ["accepted", "cutoff", "ack 3", "summary", "ack 5"])
    }

    @Test("with no acknowledgement queued an urgent message waits its turn")
    func urgentWithoutAcknowledgementsAppends() {
        let outboxes = Outboxes(capacityPerConnection: 16)
        outboxes.open(1)
        _ = outboxes.enqueue(Array("accepted".utf8), for: 1)
        _ = outboxes.enqueue(Array("warning".utf8), for: 1, order: .urgent)
        #expect(drain(outboxes, 1) == ["accepted", "warning"])
    }
}
