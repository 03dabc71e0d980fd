import Dispatch
import Synchronization
import VoiceMeterDomain
import WebSocketTransport

/// Streams seed-shaped usage frames of many calls over a few connections as fast as the server
/// acknowledges them, keeping at most `window` unacknowledged frames per connection.
final class ThroughputLoad: Sendable {
    struct CallLoad {
        var id: String
        /// `{"type":"usage","call_id":"<id>","seq":` in UTF-8: how each of the call's frames starts.
        var framePrefix: [UInt8]
        var frames = SentFrames()

        init(id: String) {
            self.id = id
            framePrefix = Array(#"{"type":"usage","call_id":"\#(id)","seq":"#.utf8)
        }
    }

    struct Link {
        var calls: [CallLoad]
        var inflight = 0
        var nextCall = 0
    }

    struct State {
        var links: [Int: Link] = [:]
        var callIndex: [String: (link: Int, call: Int)] = [:]
        var sending = true
        var sent = 0
        var acked = 0
        var measuring = false
        var latencies: [UInt64] = []
        var errors: [String] = []
        var disconnects = 0
    }

    private let state = Mutex(State())
    private let client = Mutex<WebSocketClient?>(nil)
    private let window: Int
    /// The JSON after `"ts":N` of each canonical frame (UTF-8), with its offset in seconds.
    private let frameTails: [(offset: Int64, tail: [UInt8])]

    init(endpoint: ClientEndpoint, connections: Int, callsPerConnection: Int, window: Int, runTag: String) throws {
        self.window = window
        frameTails = BenchmarkPrices.canonicalCallFrames.map { usage in
            let model = usage.model.map { #","model":"\#($0)""# } ?? ""
            return ((usage.occurredAt.microsecondsSinceEpoch - BenchmarkPrices.callStart.microsecondsSinceEpoch) / 1_000_000,
                    Array(#","service":"\#(usage.service)","operation":"\#(usage.operation)","amount":"\#(usage.amount)","unit":"\#(usage.unit.rawValue)"\#(model)}"#.utf8))
        }
        let transport = try WebSocketClient { [weak self] id, event in self?.handle(id, event) }
        client.withLock { $0 = transport }
        for link in 0..<connections {
            let id = transport.connect(to: endpoint)
            let calls = (0..<callsPerConnection).map { CallLoad(id: "E2E-\(runTag)-\(link)-\($0)") }
            state.withLock { state in
                state.links[id.rawValue] = Link(calls: calls)
                for (index, call) in calls.enumerated() { state.callIndex[call.id] = (id.rawValue, index) }
            }
        }
    }

    var sent: Int { state.withLock { $0.sent } }
    var acknowledged: Int { state.withLock { $0.acked } }
    var inflight: Int { state.withLock { $0.links.values.reduce(0) { $0 + $1.inflight } } }
    var errors: [String] { state.withLock { $0.errors } }
    var disconnects: Int { state.withLock { $0.disconnects } }

    /// Starts or stops recording ack latencies.
    func measure(_ on: Bool) { state.withLock { $0.measuring = on } }
    /// Latencies recorded while measuring, in nanoseconds, sorted.
    var latencies: [UInt64] { state.withLock { $0.latencies.sorted() } }
    /// Stops sending new frames (frames in flight are still acknowledged).
    func stopSending() { state.withLock { $0.sending = false } }

    func shutdown() { client.withLock { $0 }?.shutdown() }

    private func handle(_ id: ClientConnectionID, _ event: ClientEvent) {
        guard let transport = client.withLock({ $0 }) else { return }
        state.withLock { state in
            switch event {
            case .connected:
                guard let link = state.links[id.rawValue] else { return }
                // The calls started when the canonical call did: their frames are stamped from then on.
                let startedAt = BenchmarkPrices.callStart.microsecondsSinceEpoch / 1_000_000
                for call in link.calls {
                    transport.send(#"{"type":"call.start","call_id":"\#(call.id)","user_id":"\#(call.id)-user","ts":\#(startedAt),"revenue":"4.99"}"#, on: id)
                }
                fill(id, &state, transport)
            case .message(let text):
                if let (callID, seq) = parseAck(text) {
                    acknowledge(callID, through: seq, &state)
                    fill(id, &state, transport)
                } else if text.hasPrefix(#"{"type":"error""#), state.errors.count < 5 {
                    state.errors.append(text)
                }
            case .disconnected, .connectFailed:
                state.disconnects += 1
            case .closeReceived:
                break
            }
        }
    }

    /// Everything of the call up to `seq` is committed.
    private func acknowledge(_ callID: String, through seq: Int64, _ state: inout State) {
        guard let (link, index) = state.callIndex[callID],
              let latencies = state.links[link]?.calls[index].frames.acknowledge(through: seq, at: DispatchTime.now().uptimeNanoseconds) else { return }
        if state.measuring { state.latencies += latencies }
        let newly = latencies.count
        state.links[link]!.inflight -= newly
        state.acked += newly
    }

    private func fill(_ id: ClientConnectionID, _ state: inout State, _ transport: WebSocketClient) {
        // Taken out of the table while it changes: a copy left behind would make every
        // send recorded below copy that call's whole history.
        guard var link = state.links.removeValue(forKey: id.rawValue) else { return }
        let start = BenchmarkPrices.callStart.microsecondsSinceEpoch / 1_000_000
        // Written as bytes and queued as one burst (the load generator's CPU is part of what is measured).
        var burst: [[UInt8]] = []
        while state.sending, link.inflight < window {
            let index = link.nextCall % link.calls.count
            link.nextCall += 1
            let seq = link.calls[index].frames.nextSeq
            // The canonical call's frames over and over, each stamped at its moment of that call
            // (in the past: the server refuses stamps ahead of its clock).
            let (offset, tail) = frameTails[Int((seq - 1) % Int64(frameTails.count))]
            var frame = link.calls[index].framePrefix
            frame.reserveCapacity(frame.count + 32 + tail.count)
            frame.appendDecimal(Int(seq))
            frame.append(contentsOf: #","ts":"#.utf8)
            frame.appendDecimal(Int(start + offset))
            frame.append(contentsOf: tail)
            burst.append(frame)
            link.calls[index].frames.recordSent(at: DispatchTime.now().uptimeNanoseconds)
            link.inflight += 1
            state.sent += 1
        }
        if !burst.isEmpty { transport.send(utf8Messages: burst, on: id) }
        state.links[id.rawValue] = link
    }
}

/// When each frame of one call was sent (seq n at index n − 1) and how far acks have covered them.
struct SentFrames {
    private(set) var sentAt: [UInt64] = []
    private(set) var acked: Int64 = 0

    var count: Int { sentAt.count }
    var nextSeq: Int64 { Int64(sentAt.count) + 1 }

    /// The frame `nextSeq` was sent at `time` (uptime nanoseconds).
    mutating func recordSent(at time: UInt64) { sentAt.append(time) }

    /// An ack through `seq` arrived at `now`: the latencies of the frames it newly covers (none
    /// for an ack already seen).
    mutating func acknowledge(through seq: Int64, at now: UInt64) -> [UInt64] {
        guard seq > acked else { return [] }
        defer { acked = seq }
        return ((acked + 1)...seq).map { now - sentAt[Int($0 - 1)] }
    }
}

/// `{"type":"ack","call_id":"X","seq":N}` read without a JSON parser (the load generator's CPU is
/// part of what the benchmarks measure); `nil` for any other text.
func parseAck(_ text: String) -> (callID: String, seq: Int64)? {
    var text = text
    return text.withUTF8 { bytes -> (callID: String, seq: Int64)? in
        let prefix = #"{"type":"ack","call_id":""#.utf8
        guard bytes.starts(with: prefix) else { return nil }
        var index = prefix.count
        while index < bytes.count, bytes[index] != UInt8(ascii: "\"") { index += 1 }
        let callID = String(decoding: UnsafeBufferPointer(rebasing: bytes[prefix.count..<index]), as: UTF8.self)
        // `","seq":` holds no digit: the first digit after the id starts the seq.
        let isDigit = { (byte: UInt8) in byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9") }
        while index < bytes.count, !isDigit(bytes[index]) { index += 1 }
        guard index < bytes.count else { return nil }
        var seq: Int64 = 0
        while index < bytes.count, isDigit(bytes[index]) {
            let (shifted, overflow) = seq.multipliedReportingOverflow(by: 10)
            guard !overflow, shifted <= Int64.max - 9 else { return nil }
            seq = shifted + Int64(bytes[index] - UInt8(ascii: "0"))
            index += 1
        }
        return (callID, seq)
    }
}
