import Testing
@testable import WebSocketTransport

@Suite("Outboxes: the order messages leave a connection in")
struct OutboxesTests {
    private func drain(_ outboxes: Outboxes, _ id: Int) -> [String] {
        var sent: [String] = []
        while let (payload, _) = outboxes.next(for: id) { sent.append(String(decoding: payload, as: UTF8.self)) }
        return sent
    }

    /// The order `messages`, queued in turn on one connection, leave it in.
    private func sent(_ messages: [(String, OutboundOrder)]) -> [String] {
        let outboxes = Outboxes(capacityPerConnection: 16)
        outboxes.open(1)
        for (text, order) in messages { _ = outboxes.enqueue(Array(text.utf8), for: 1, order: order) }
        return drain(outboxes, 1)
    }

    @Test("an urgent message overtakes queued acknowledgements, never an in-order message")
    func urgentOvertakesOnlyAcknowledgements() {
        let order = sent([("accepted", .inOrder), ("ack 3", .overtakable), ("summary", .inOrder), ("ack 5", .overtakable),
                          ("cutoff", .urgent)])
        #expect(order == ["accepted", "cutoff", "ack 3", "summary", "ack 5"])
    }

    @Test("with no acknowledgement queued an urgent message waits its turn")
    func urgentWithoutAcknowledgementsAppends() {
        #expect(sent([("accepted", .inOrder), ("warning", .urgent)]) == ["accepted", "warning"])
    }

    @Test("a burst is queued in order with one wake; what does not fit is dropped and the connection is closed")
    func burst() {
        let outboxes = Outboxes(capacityPerConnection: 3)
        outboxes.open(1)
        #expect(outboxes.enqueue(["a", "b"].map { Array($0.utf8) }, for: 1) == true)
        #expect(outboxes.enqueue(["c", "d", "e"].map { Array($0.utf8) }, for: 1) == false)
        #expect(outboxes.enqueue(["f"].map { Array($0.utf8) }, for: 7) == nil)
        let (ready, commands, _) = outboxes.drainWake()
        #expect(ready == [1])
        #expect(commands.count == 1)
        if case .close(1, 1008, _)? = commands.first {} else { Issue.record("expected a 1008 close of connection 1, got \(commands)") }
        #expect(drain(outboxes, 1) == ["a", "b", "c"])
    }
}
