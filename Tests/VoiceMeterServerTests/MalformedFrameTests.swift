import Foundation
import Testing
import VoiceMeterDomain
import VoiceMeterServer
import VoiceMeterStore

@Suite("Frames the decoder refuses", .serialized)
struct MalformedFrameTests {
    @Test("a frame with a malformed field is refused for good and its seq settled: later frames are acknowledged, here and after a resume")
    func malformedFrameSettlesItsSeq() async throws {
        let running = try await RunningServer()
        try await running.serving {
            let client = try StreamingClient(running.endpoint)
            let messages = running.canonicalCallMessages("CAMALFORMED")
            // Seq 2 with a model name longer than the protocol's 100 characters.
            let malformed = messages[2].replacingOccurrences(of: #""unit":"seconds""#,
                                                             with: #""unit":"seconds","model":"\#(String(repeating: "m", count: 101))""#)
            client.send([messages[0], messages[1], malformed, messages[3]])
            #expect(client.wait { $0.contains { $0.contains(#""code":"invalid_field""#) && $0.contains(#""seq":2"#) } })
            #expect(client.wait { _ in client.highestAck(call: "CAMALFORMED") == 3 }, "the ack passes the refused seq")
            let kept = try running.database.query("SELECT reason FROM rejected_frames WHERE call_id = 'CAMALFORMED' AND seq = 2")
                .map { try $0.decode("reason", as: String.self) }
            #expect(kept == ["malformed"])
            // Resumed on a new connection, the call is acknowledged through 3 from what the ledger holds.
            client.reconnect(to: running.endpoint)
            client.send([messages[0]])
            #expect(client.wait { _ in client.highestAck(call: "CAMALFORMED") == 3 })
            client.send(Array(messages[4...]))
            #expect(client.waitForSummary())
            #expect(try running.storedEvents(call: "CAMALFORMED") == messages.count - 3)
        }
    }

    @Test("a message over 64 KiB is answered frame_too_large and dropped unread; the connection and its call go on")
    func oversizedMessageKeepsTheConnection() async throws {
        let running = try await RunningServer()
        try await running.serving {
            let client = try StreamingClient(running.endpoint)
            let messages = running.canonicalCallMessages("CABIG")
            let oversized = messages[2].replacingOccurrences(of: #""unit":"seconds""#,
                                                             with: #""unit":"seconds","metadata":{"pad":"\#(String(repeating: "x", count: 65 * 1024))"}"#)
            client.send([messages[0], messages[1], oversized])
            #expect(client.wait { $0.contains { $0.contains(#""code":"frame_too_large""#) } })
            // Nothing of it was read: seq 2 is still owed, so the acks stop at 1 until it comes.
            #expect(client.wait { _ in client.highestAck(call: "CABIG") == 1 })
            client.send(Array(messages[2...]))
            #expect(client.waitForSummary())
            #expect(try running.storedEvents(call: "CABIG") == messages.count - 2)
        }
    }
}
