// libFuzzer targets for the parsers a client or an operator's file reaches. deploy/fuzz.sh
// compiles this file into the VoiceMeterDomain module's sources, with the listener's pure
// MessageAssembler and its limits (swiftc -sanitize=fuzzer,address -D VOICEMETER_FUZZ)
// and runs each target from its corpus in Tests/Fuzz/corpus/<target>; VOICEMETER_FUZZ_TARGET
// picks the target. No input may crash, and what parses must survive its own round trip.
import Glibc

/// The parsers under test.
enum FuzzTarget: String, CaseIterable {
    case clientMessage = "client-message"
    case json
    case decimal
    case ingressSession = "ingress-session"
    case csv
    case priceFile = "price-file"

    static let selected: FuzzTarget = {
        guard let name = getenv("VOICEMETER_FUZZ_TARGET").map({ String(cString: $0) }), let target = FuzzTarget(rawValue: name) else {
            fatalError("set VOICEMETER_FUZZ_TARGET to one of: \(allCases.map(\.rawValue).joined(separator: ", "))")
        }
        return target
    }()
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    let bytes = data.map { Array(UnsafeBufferPointer(start: $0, count: size)) } ?? []
    switch FuzzTarget.selected {
    case .clientMessage: fuzzClientMessage(bytes)
    case .json: fuzzJSON(bytes)
    case .decimal: fuzzDecimal(String(decoding: bytes, as: UTF8.self))
    case .ingressSession: fuzzIngressSession(bytes)
    case .csv: fuzzCSV(String(decoding: bytes, as: UTF8.self))
    case .priceFile: _ = try? PriceFile.parse(String(decoding: bytes, as: UTF8.self), now: fuzzNow)
    }
    return 0
}

/// 2026-03-10T12:00:00Z: a fixed instant, never today's.
private let fuzzNow = Timestamp(microsecondsSinceEpoch: 1_773_144_000_000_000)

/// A message that decodes is encoded again and must decode to the same message.
private func fuzzClientMessage(_ bytes: [UInt8]) {
    guard case .success(let message) = ClientMessageDecoder.decode(bytes) else { return }
    let again = ClientMessageDecoder.decode(Array(message.json.utf8))
    precondition(again == .success(message), "round trip changed \(message) into \(again)")
}

private func fuzzJSON(_ bytes: [UInt8]) {
    guard let value = try? JSONParser.parse(bytes) else { return }
    let again = try? JSONParser.parse(value.serialized)
    precondition(again == value, "round trip changed \(value) into \(String(describing: again))")
}

private func fuzzDecimal(_ text: String) {
    guard let value = ExactDecimal(text) else { return }
    precondition(ExactDecimal(value.description) == value, "\(text) printed as \(value.description), which reads back differently")
}

/// The first byte seeds the cuts: the rest arrives as pieces of pseudo-random lengths, the last
/// ending a message; the listener's assembler joins them and each whole message goes to the
/// connection's session, as on the server.
private func fuzzIngressSession(_ bytes: [UInt8]) {
    guard let seed = bytes.first else { return }
    var assembler = MessageAssembler(limits: WebSocketLimits(), nowNanoseconds: 0)
    var session = IngressSession(limits: IngressLimits(), nowNanoseconds: 0)
    var random = SeededRandom(seed: UInt64(seed))
    var start = 1
    while start < bytes.count {
        let end = min(bytes.count, start + 1 + Int(random.next() % 64))
        let now = UInt64(start) * 1_000
        if case .ready(.message(let message, let isBinary)) = assembler.receive(bytes[start..<end], endsMessage: end == bytes.count || random.next() % 4 == 0,
                                                                         isBinary: false, nowNanoseconds: now) {
            _ = session.receive(message, isBinary: isBinary, nowNanoseconds: now)
        }
        start = end
    }
}

private func fuzzCSV(_ text: String) {
    _ = try? CSVReader.records(text)
    _ = try? CSVReader.table(text)
}
