import Testing
@testable import WebSocketTransport

@Suite("Message assembly on the listener")
struct MessageAssemblerTests {
    let now: UInt64 = 1_000_000_000
    let message = Array(#"{"type":"usage","call_id":"CA0001","seq":1,"ts":"2026-11-22T18:00:30Z","service":"twilio","operation":"voice_outbound","amount":"30","unit":"seconds"}"#.utf8)

    private func assembler(_ limits: WebSocketLimits = WebSocketLimits()) -> MessageAssembler {
        MessageAssembler(limits: limits, nowNanoseconds: now)
    }

    @Test("a message split at every byte boundary, or one byte at a time, reassembles to the same bytes")
    func reassembly() {
        for cut in 1..<message.count {
            var split = assembler()
            #expect(split.receiveAll([Array(message[..<cut]), Array(message[cut...])], now: now) == [.incomplete, .ready(.message(message, isBinary: false))])
        }
        var trickle = assembler()
        #expect(trickle.receiveAll(message.map { [$0] }, now: now).last == .ready(.message(message, isBinary: false)))
    }

    @Test("a 65 KiB message is reported too large with its size, and the next message still arrives")
    func oversizedThenFine() {
        var connection = assembler()
        let big = Array(repeating: UInt8(ascii: " "), count: 65 * 1024)
        #expect(connection.receiveAll([Array(big[..<40_000]), Array(big[40_000...])], now: now).last == .ready(.tooLarge(receivedBytes: 65 * 1024, limitBytes: 65_536)))
        #expect(connection.receiveAll([message], now: now) == [.ready(.message(message, isBinary: false))])
    }

    @Test("a message may arrive in up to 1,024 pieces; more close the connection with 1008 before it is complete")
    func piecesPerMessageBounded() {
        let padded = message + Array(repeating: UInt8(ascii: " "), count: 2_048 - message.count)
        var patient = assembler()
        let inPieces = stride(from: 0, to: padded.count, by: 2).map { Array(padded[$0..<$0 + 2]) }
        #expect(patient.receiveAll(inPieces, now: now).last == .ready(.message(padded, isBinary: false)))
        var trickle = assembler()
        // Nothing more is read after the close.
        #expect(trickle.receiveAll(padded.map { [$0] }, now: now).filter { $0 != .incomplete }
                == [.close(code: 1008, reason: "a message arrived in more than 1024 pieces")])
    }

    @Test("pieces count against their own rate: a connection sending more pieces a second than allowed is closed with 1008")
    func piecesAreRateLimited() {
        var limits = WebSocketLimits()
        limits.messagePiecesPerSecondPerConnection = 160
        limits.messagePiecesBurstPerConnection = 160
        var connection = assembler(limits)
        var results: [AssembledMessage] = []
        for index in 0..<200 { results.append(connection.receive([message[index % message.count]], endsMessage: false, isBinary: false, nowNanoseconds: now)) }
        #expect(results.filter { $0 != .incomplete } == [.close(code: 1008, reason: "more than 160 message pieces a second")])
        // Whole messages in one piece use no piece tokens.
        var whole = assembler(limits)
        for _ in 0..<500 { #expect(whole.receiveAll([message], now: now) == [.ready(.message(message, isBinary: false))]) }
    }

    @Test("a peer that keeps sending oversized messages is closed with 1009")
    func oversizedRepeatedly() {
        var connection = assembler()
        let big = Array(repeating: UInt8(ascii: " "), count: 70_000)
        var results: [AssembledMessage] = []
        for _ in 0..<3 { results += connection.receiveAll([big], now: now) }
        #expect(results == [.ready(.tooLarge(receivedBytes: 70_000, limitBytes: 65_536)), .ready(.tooLarge(receivedBytes: 70_000, limitBytes: 65_536)),
                            .close(code: 1009, reason: "messages keep exceeding 65536 bytes")])
    }

    @Test("a binary message is handed over as binary")
    func binary() {
        var connection = assembler()
        #expect(connection.receive([1, 2, 3], endsMessage: true, isBinary: true, nowNanoseconds: now) == .ready(.message([1, 2, 3], isBinary: true)))
    }
}

extension MessageAssembler {
    /// Feeds `chunks` as one message (the last chunk ends it) and returns what each piece amounted to.
    mutating func receiveAll(_ chunks: [[UInt8]], now: UInt64) -> [AssembledMessage] {
        chunks.enumerated().map { index, chunk in
            receive(chunk, endsMessage: index == chunks.count - 1, isBinary: false, nowNanoseconds: now)
        }
    }
}
