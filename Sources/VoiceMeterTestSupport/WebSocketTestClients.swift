import Foundation
import Synchronization
import WebSocketTransport

/// Records client events and waits for conditions on them.
public final class ClientRecorder: Sendable {
    public init() {}

    private let events = Mutex<[ClientConnectionID: [ClientEvent]]>([:])

    public func record(_ id: ClientConnectionID, _ event: ClientEvent) {
        events.withLock { $0[id, default: []].append(event) }
    }

    public func events(of id: ClientConnectionID) -> [ClientEvent] { events.withLock { $0[id] ?? [] } }

    public func messages(of id: ClientConnectionID) -> [String] {
        events(of: id).compactMap { if case .message(let text) = $0 { text } else { nil } }
    }

    public var all: [ClientConnectionID: [ClientEvent]] { events.withLock { $0 } }

    /// Polls `condition` until it holds or `seconds` pass; returns whether it held.
    public func wait(seconds: Double = 10, until condition: () -> Bool) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if condition() { return true }
            usleep(2_000)
        }
        return condition()
    }
}

/// A plain TCP client for what a WebSocket library would hide: raw status lines, half-sent
/// headers, a peer that never answers pings.
public final class RawSocket {
    public let descriptor: Int32

    public init(port: Int, host: String = "127.0.0.1") throws {
        descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        inet_pton(AF_INET, host, &address.sin_addr)
        let status = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard status == 0 else { throw POSIXError(.ECONNREFUSED) }
        var timeout = timeval(tv_sec: 15, tv_usec: 0)
        setsockopt(descriptor, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    }

    deinit { Glibc.close(descriptor) }

    public func send(_ text: String) {
        let bytes = Array(text.utf8)
        _ = bytes.withUnsafeBytes { Glibc.send(descriptor, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
    }

    /// Sends one WebSocket frame as a client must (masked): `opcode` 1 starts a text message, 0
    /// continues it; `final` ends the message.
    public func sendFrame(opcode: UInt8, final: Bool, payload: [UInt8]) {
        var frame: [UInt8] = [(final ? 0x80 : 0) | opcode]
        switch payload.count {
        case ..<126: frame.append(0x80 | UInt8(payload.count))
        case ..<65_536: frame += [0x80 | 126, UInt8(payload.count >> 8), UInt8(payload.count & 0xff)]
        default: frame += [0x80 | 127] + (0..<8).reversed().map { UInt8((payload.count >> ($0 * 8)) & 0xff) }
        }
        let mask: [UInt8] = [0x12, 0x34, 0x56, 0x78]
        frame += mask
        frame += payload.enumerated().map { $0.element ^ mask[$0.offset % 4] }
        _ = frame.withUnsafeBytes { Glibc.send(descriptor, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
    }

    /// Reads until the peer closes (or the 15 s receive timeout); returns what arrived and whether it closed.
    public func readUntilClosed() -> (text: String, closed: Bool) {
        var received: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let count = recv(descriptor, &buffer, buffer.count, 0)
            if count == 0 { return (String(decoding: received, as: UTF8.self), true) }
            if count < 0 { return (String(decoding: received, as: UTF8.self), false) }
            received += buffer[..<count]
        }
    }

    /// Reads whatever arrives within the receive timeout, up to the end of the HTTP headers.
    public func readHeaders() -> String {
        var received: [UInt8] = []
        var byte: UInt8 = 0
        while recv(descriptor, &byte, 1, 0) == 1 {
            received.append(byte)
            if received.suffix(4) == [13, 10, 13, 10] { break }
        }
        return String(decoding: received, as: UTF8.self)
    }

    /// Sends an upgrade request with everything a browser would send.
    public func sendUpgrade(path: String = "/v1/stream", token: String?) {
        var request = "GET \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        request += "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: voicemeter.v1\r\n"
        if let token { request += "Authorization: Bearer \(token)\r\n" }
        send(request + "\r\n")
    }
}
