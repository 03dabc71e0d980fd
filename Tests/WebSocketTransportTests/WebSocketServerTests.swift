import Foundation
import Testing
import VoiceMeterDomain
import VoiceMeterTestSupport
import WebSocketTransport

@Suite("libwebsockets server on loopback", .serialized)
struct WebSocketServerTests {
    @Test("a valid stream is answered over a real WebSocket, with and without the subprotocol offered")
    func validStream() throws {
        let (server, _) = try AckingDelegate.start()
        defer { server.shutdown() }
        let recorder = ClientRecorder()
        let client = try WebSocketClient { recorder.record($0, $1) }
        defer { client.shutdown() }
        var endpoint = ClientEndpoint(host: "127.0.0.1", port: server.port, bearerToken: "good-token")
        let withProtocol = client.connect(to: endpoint)
        endpoint.subprotocol = nil
        let withoutProtocol = client.connect(to: endpoint)
        for connection in [withProtocol, withoutProtocol] {
            for seq in 1...3 { client.send(usageFrame(seq: seq), on: connection) }
        }
        #expect(recorder.wait { recorder.messages(of: withProtocol).count == 3 && recorder.messages(of: withoutProtocol).count == 3 })
        #expect(recorder.messages(of: withProtocol) == (1...3).map { #"{"type":"ack","call_id":"CA1","seq":\#($0)}"# })
    }

    @Test("an upgrade without a token, or with a wrong one, is refused with HTTP 401 and no WebSocket")
    func unauthorized() throws {
        let (server, delegate) = try AckingDelegate.start()
        defer { server.shutdown() }
        for token in [nil, "wrong-token"] {
            let socket = try RawSocket(port: server.port)
            socket.sendUpgrade(token: token)
            let response = socket.readHeaders()
            #expect(response.hasPrefix("HTTP/1.") && response.contains(" 401 "), "\(response)")
            #expect(response.lowercased().contains("www-authenticate: bearer"))
        }
        #expect(delegate.opened.load(ordering: .relaxed) == 0)
    }

    @Test("a 65 KiB message gets frame_too_large and the connection keeps working")
    func oversizedMessage() throws {
        let session = try AckingSession()
        defer { session.shutdown() }
        session.send(usageFrame(seq: 1, padding: 65 * 1024))
        session.send(usageFrame(seq: 2))
        #expect(session.waitForMessages(2))
        let messages = session.messages
        #expect(messages.count == 2)
        #expect(messages.first?.contains(#""code":"frame_too_large""#) == true)
        #expect(messages.last == #"{"type":"ack","call_id":"CA1","seq":2}"#)
    }

    @Test("a burst whose first message lws cannot send whole (5 KiB) still delivers every later message intact, in order")
    func burstAfterPartialWrite() throws {
        let session = try AckingSession()
        defer { session.shutdown() }
        // Queued before the connection opens, so the first writable callback finds all of them.
        session.send(usageFrame(seq: 1, padding: 5 * 1024))
        for seq in 2...6 { session.send(usageFrame(seq: seq, padding: seq == 4 ? 6 * 1024 : 0)) }
        #expect(session.waitForMessages(6))
        #expect(session.messages == (1...6).map { #"{"type":"ack","call_id":"CA1","seq":\#($0)}"# })
    }

    @Test("a connection the delegate closes gets its close code at once; another connection is served meanwhile")
    func delegateCloses() throws {
        let session = try AckingSession()
        defer { session.shutdown() }
        let other = session.client.connect(to: ClientEndpoint(host: "127.0.0.1", port: session.server.port, bearerToken: "good-token"))
        session.send("close-me")
        session.send(usageFrame(seq: 1))
        session.client.send(usageFrame(seq: 7), on: other)
        #expect(session.recorder.wait { session.recorder.events(of: session.connection).contains(.closeReceived(code: 4000)) })
        #expect(session.recorder.wait { session.recorder.messages(of: other) == [#"{"type":"ack","call_id":"CA1","seq":7}"#] })
        // Nothing after the close was read: the frame sent behind it was never acknowledged.
        #expect(session.messages.isEmpty)
    }

    @Test("1,000 concurrent connections are each served")
    func thousandConnections() throws {
        let (server, delegate) = try AckingDelegate.start()
        defer { server.shutdown() }
        let recorder = ClientRecorder()
        let client = try WebSocketClient { recorder.record($0, $1) }
        defer { client.shutdown() }
        let connections = (0..<1_000).map { _ in client.connect(to: ClientEndpoint(host: "127.0.0.1", port: server.port, bearerToken: "good-token")) }
        for (index, connection) in connections.enumerated() { client.send(usageFrame(call: "C\(index)", seq: 1), on: connection) }
        #expect(recorder.wait(seconds: 30) { connections.allSatisfy { recorder.messages(of: $0).count == 1 } })
        #expect(delegate.opened.load(ordering: .relaxed) == 1_000)
        let failures = recorder.all.values.flatMap { $0 }.filter { if case .connectFailed = $0 { true } else { false } }
        #expect(failures.isEmpty, "\(failures.prefix(3)) of \(failures.count)")
    }

    @Test("connections beyond the per-peer limit are refused with 429; a listed Origin is required when configured")
    func perPeerAndOriginLimits() throws {
        let (server, _) = try AckingDelegate.start {
            $0.limits.connectionsPerPeerMax = 2
            $0.allowedOrigins = ["https://pipeline.example"]
        }
        defer { server.shutdown() }
        func upgrade(origin: String?) throws -> (RawSocket, String) {
            let socket = try RawSocket(port: server.port)
            var request = "GET /v1/stream HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            request += "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nAuthorization: Bearer good-token\r\n"
            if let origin { request += "Origin: \(origin)\r\n" }
            socket.send(request + "\r\n")
            return (socket, socket.readHeaders())
        }
        #expect(try upgrade(origin: "https://evil.example").1.contains(" 403 "))
        let first = try upgrade(origin: "https://pipeline.example")
        let second = try upgrade(origin: "https://pipeline.example")
        #expect(first.1.hasPrefix("HTTP/1.1 101") && second.1.hasPrefix("HTTP/1.1 101"))
        #expect(try upgrade(origin: "https://pipeline.example").1.contains(" 429 "))
    }

    @Test("a message sent as 2,000 one-byte fragments gets its connection closed; another connection is acknowledged meanwhile")
    func fragmentFloodClosed() throws {
        let session = try AckingSession()
        defer { session.shutdown() }
        let socket = try RawSocket(port: session.server.port)
        socket.sendUpgrade(token: "good-token")
        #expect(socket.readHeaders().hasPrefix("HTTP/1.1 101"))
        socket.sendFrame(opcode: 1, final: false, payload: Array("{".utf8))
        for _ in 0..<1_999 { socket.sendFrame(opcode: 0, final: false, payload: [UInt8(ascii: " ")]) }
        session.send(usageFrame(seq: 1))
        #expect(session.waitForMessages(1))
        // The server hangs up (its close frame may be lost to the reset that unread input causes).
        #expect(session.recorder.wait(seconds: 5) { session.delegate.closed.load(ordering: .relaxed) == 1 })
    }

    @Test("a connection that stops answering pings is closed after the idle timeout")
    func idleConnectionClosed() throws {
        let (server, _) = try AckingDelegate.start { $0.limits.idleTimeoutSeconds = 1 }
        defer { server.shutdown() }
        let socket = try RawSocket(port: server.port)
        socket.sendUpgrade(token: "good-token")
        #expect(socket.readHeaders().hasPrefix("HTTP/1.1 101"))
        let started = Date()
        let (_, closed) = socket.readUntilClosed()
        #expect(closed)
        #expect(Date().timeIntervalSince(started) < 8)
    }

    @Test("a client that never finishes its headers is disconnected (slow loris)")
    func slowLoris() throws {
        let (server, _) = try AckingDelegate.start { $0.limits.headerTimeoutSeconds = 2 }
        defer { server.shutdown() }
        let socket = try RawSocket(port: server.port)
        socket.send("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        let started = Date()
        let (_, closed) = socket.readUntilClosed()
        #expect(closed)
        #expect(Date().timeIntervalSince(started) < 8)
    }

    @Test("plain HTTP on the same listener answers health checks")
    func healthz() throws {
        let (server, _) = try AckingDelegate.start()
        defer { server.shutdown() }
        let socket = try RawSocket(port: server.port)
        socket.send("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        let (response, _) = socket.readUntilClosed()
        #expect(response.hasPrefix("HTTP/1.1 200"))
        #expect(response.hasSuffix(#"{"status":"ok"}"#))
    }

    @Test("--listen 127.0.0.1:PORT listens on 127.0.0.1 only")
    func bindsExactly() throws {
        let (server, _) = try AckingDelegate.start()
        defer { server.shutdown() }
        let portHex = String(format: "%04X", server.port)
        let table = try String(contentsOfFile: "/proc/net/tcp", encoding: .utf8)
        var listening: [String] = []
        for line in table.split(separator: "\n") {
            let columns = line.split(separator: " ").map(String.init)
            // Column 1 is local address:port (hex), column 3 the state (0A = LISTEN).
            if columns.count > 3, columns[1].hasSuffix(":" + portHex), columns[3] == "0A" { listening.append(columns[1]) }
        }
        #expect(listening == ["0100007F:" + portHex])
        let listening6 = (try? String(contentsOfFile: "/proc/net/tcp6", encoding: .utf8)) ?? ""
        #expect(!listening6.contains(":" + portHex + " 00000000000000000000000000000000:0000 0A"))
    }

    @Test("shutdown closes connections with 1001 (going away)")
    func shutdownGoingAway() throws {
        let (server, _) = try AckingDelegate.start()
        let recorder = ClientRecorder()
        let client = try WebSocketClient { recorder.record($0, $1) }
        defer { client.shutdown() }
        let connection = client.connect(to: ClientEndpoint(host: "127.0.0.1", port: server.port, bearerToken: "good-token"))
        #expect(recorder.wait { recorder.events(of: connection).contains(.connected) })
        server.shutdown()
        #expect(recorder.wait { recorder.events(of: connection).contains(.closeReceived(code: 1001)) })
    }
}
