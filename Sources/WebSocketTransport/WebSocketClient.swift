import CLibWebSockets
import Foundation
import Synchronization

/// Identifies one client connection of a `WebSocketClient`.
public struct ClientConnectionID: Hashable, Sendable, CustomStringConvertible {
    public let rawValue: Int
    public var description: String { "client-\(rawValue)" }
}

/// What happens on a client connection, delivered on the client's service thread.
public enum ClientEvent: Sendable, Equatable {
    case connected
    case message(String)
    /// The server sent a close frame with this code (before `disconnected`).
    case closeReceived(code: UInt16)
    case disconnected
    case connectFailed(String)
}

/// Where and how a client connects.
public struct ClientEndpoint: Sendable {
    public var host: String
    public var port: Int
    public var path = "/v1/stream"
    public var subprotocol: String? = "voicemeter.v1"
    public var bearerToken: String?
    public var useTLS = false

    public init(host: String, port: Int, bearerToken: String?) {
        self.host = host
        self.port = port
        self.bearerToken = bearerToken
    }
}

/// A libwebsockets client context with its own service thread, carrying any number of
/// connections. The same threading rules as the server: only `ServiceWake` crosses threads.
public final class WebSocketClient: Sendable {
    private let onEvent: @Sendable (ClientConnectionID, ClientEvent) -> Void
    private let outboxes: Outboxes
    private let pending = Mutex<[(Int, ClientEndpoint)]>([])
    private let nextID = Atomic<Int>(0)
    let loop: ClientLoop
    private let serviceWake = ServiceWake()
    private let finished = DispatchSemaphore(value: 0)
    private let startupFailed = Atomic<Bool>(false)

    /// - Parameters:
    ///   - certificateAuthorityPath: PEM file of the CA that signs the server's certificate (TLS).
    ///   - onEvent: called on the service thread for every event; must return quickly.
    public init(certificateAuthorityPath: String? = nil,
                onEvent: @escaping @Sendable (ClientConnectionID, ClientEvent) -> Void) throws {
        self.onEvent = onEvent
        self.outboxes = Outboxes(capacityPerConnection: 1 << 20)
        self.loop = ClientLoop()
        let ready = DispatchSemaphore(value: 0)
        let thread = Thread { [self] in
            self.run(certificateAuthorityPath: certificateAuthorityPath, ready: ready)
        }
        thread.name = "voicemeter.lws-client"
        thread.start()
        ready.wait()
        if startupFailed.load(ordering: .acquiring) { throw WebSocketServerError(description: "cannot create the WebSocket client context") }
    }

    /// Starts connecting; the outcome arrives as `.connected` or `.connectFailed`.
    public func connect(to endpoint: ClientEndpoint) -> ClientConnectionID {
        let id = nextID.add(1, ordering: .relaxed).newValue
        outboxes.open(id)
        pending.withLock { $0.append((id, endpoint)) }
        if outboxes.requestWake() { wake() }
        return ClientConnectionID(rawValue: id)
    }

    /// Queues a text message (sent once connected).
    public func send(_ text: String, on connection: ClientConnectionID) {
        if outboxes.enqueue(Array(text.utf8), for: connection.rawValue) == true { wake() }
    }

    /// Queues text messages given as UTF-8 bytes, in order, with one wake (a load generator's burst).
    public func send(utf8Messages messages: some Collection<[UInt8]>, on connection: ClientConnectionID) {
        if outboxes.enqueue(messages, for: connection.rawValue) == true { wake() }
    }

    /// Closes with 1000 after the queued messages.
    public func close(_ connection: ClientConnectionID) {
        if outboxes.post(.close(connection.rawValue, code: 1000, reason: "client done")) { wake() }
    }

    /// Drops every connection and stops the service thread.
    public func shutdown() {
        if outboxes.requestStop() { wake() }
        finished.wait()
    }

    private func wake() { serviceWake.wake() }

    private func run(certificateAuthorityPath: String?, ready: DispatchSemaphore) {
        LWS.quietLogging()
        let settings = ContextSettings(protocolName: "voicemeter-client", callback: clientCallback, port: nil, interface: nil,
                                       owner: Unmanaged.passUnretained(self).toOpaque(), headerTimeoutSeconds: nil,
                                       certificateAuthorityPath: certificateAuthorityPath)
        LWS.withContext(settings) { context in
            guard let context else {
                startupFailed.store(true, ordering: .releasing)
                ready.signal()
                return
            }
            loop.eventLoop = context.eventLoop
            serviceWake.bind(context)
            ready.signal()
            let heartbeat = LWS.startHeartbeat { [serviceWake] in serviceWake.wake() }
            context.serve { outboxes.isStopping }
            heartbeat.cancel()
            serviceWake.unbind()
        }
        loop.eventLoop = nil
        for (_, connection) in loop.connections { connection.strings.forEach { free($0) } }
        finished.signal()
    }

    // MARK: Service thread

    func handle(_ wsi: OpaquePointer, _ reason: lws_callback_reasons, _ input: UnsafeMutableRawPointer?, _ length: Int) -> Int32 {
        let id = LWS.connectionID(of: wsi)
        switch reason {
        case LWS_CALLBACK_EVENT_WAIT_CANCELLED:
            woken(wsi)
        case LWS_CALLBACK_CLIENT_APPEND_HANDSHAKE_HEADER:
            guard let token = loop.connections[id]?.endpoint.bearerToken, let input else { return 0 }
            let cursor = input.assumingMemoryBound(to: UnsafeMutablePointer<UInt8>?.self)
            let end = cursor.pointee! + length
            let value = "Bearer \(token)"
            if !LWS.appendHandshakeHeader(wsi, name: "authorization:", value: value, cursor: cursor, end: end) { return -1 }
        case LWS_CALLBACK_CLIENT_ESTABLISHED:
            onEvent(ClientConnectionID(rawValue: id), .connected)
            LWS.requestWritable(wsi)
        case LWS_CALLBACK_CLIENT_RECEIVE:
            guard loop.connections[id] != nil else { return -1 }
            if let input { loop.connections[id]!.received.append(contentsOf: UnsafeRawBufferPointer(start: input, count: length)) }
            if LWS.endsMessage(wsi) {
                let text = String(decoding: loop.connections[id]!.received, as: UTF8.self)
                loop.connections[id]!.received.removeAll(keepingCapacity: true)
                onEvent(ClientConnectionID(rawValue: id), .message(text))
            }
        case LWS_CALLBACK_CLIENT_WRITEABLE:
            guard let burst = LWS.writeBurst(wsi, next: { outboxes.next(for: id) }) else { return -1 }
            if burst.written > 0 || burst.more {
                if burst.more || loop.connections[id]?.closing == true { LWS.requestWritable(wsi) }
            } else if loop.connections[id]?.closing == true {
                LWS.setCloseReason(wsi, code: 1000, reason: "client done")
                return -1
            }
        case LWS_CALLBACK_WS_PEER_INITIATED_CLOSE:
            if let input, length >= 2 {
                let bytes = input.assumingMemoryBound(to: UInt8.self)
                onEvent(ClientConnectionID(rawValue: id), .closeReceived(code: UInt16(bytes[0]) << 8 | UInt16(bytes[1])))
            }
        case LWS_CALLBACK_CLIENT_CONNECTION_ERROR:
            let reason = input.map { String(cString: $0.assumingMemoryBound(to: CChar.self)) } ?? "connection failed"
            forget(id)
            onEvent(ClientConnectionID(rawValue: id), .connectFailed(reason))
        case LWS_CALLBACK_CLIENT_CLOSED:
            forget(id)
            onEvent(ClientConnectionID(rawValue: id), .disconnected)
        default:
            break
        }
        return 0
    }

    private func forget(_ id: Int) {
        guard let connection = loop.connections.removeValue(forKey: id) else { return }
        connection.strings.forEach { free($0) }
        outboxes.remove(id)
    }

    private func woken(_ vhostWSI: OpaquePointer) {
        // Clear the wake flag before taking the pending connects, so a connect queued meanwhile wakes us again.
        let (ready, commands, stopping) = outboxes.drainWake()
        if stopping {
            loop.eventLoop?.stop()
            return
        }
        let starting = pending.withLock { list in defer { list.removeAll() }; return list }
        for (id, endpoint) in starting { open(id, endpoint, context: LWS.context(of: vhostWSI)) }
        for id in ready {
            if let wsi = loop.connections[id]?.wsi { LWS.requestWritable(wsi) }
        }
        for case .close(let id, _, _) in commands {
            guard let wsi = loop.connections[id]?.wsi else { continue }
            loop.connections[id]!.closing = true
            LWS.requestWritable(wsi)
        }
    }

    private func open(_ id: Int, _ endpoint: ClientEndpoint, context: OpaquePointer?) {
        let address = strdup(endpoint.host)!
        let path = strdup(endpoint.path)!
        let host = strdup("\(endpoint.host):\(endpoint.port)")!
        let subprotocol = endpoint.subprotocol.map { strdup($0)! }
        var info = lws_client_connect_info()
        info.context = context
        info.address = UnsafePointer(address)
        info.port = Int32(endpoint.port)
        info.path = UnsafePointer(path)
        info.host = UnsafePointer(host)
        info.origin = UnsafePointer(host)
        info.protocol = subprotocol.map { UnsafePointer($0) }
        info.retry_and_idle_policy = LWS.noValidityTimers
        info.ssl_connection = endpoint.useTLS ? Int32(LCCSCF_USE_SSL.rawValue) : 0
        info.opaque_user_data = UnsafeMutableRawPointer(bitPattern: id)
        // Registered before connecting: the handshake-header callback runs inside the connect call.
        loop.connections[id] = ClientLoop.Connection(wsi: nil, endpoint: endpoint, strings: [address, path, host] + (subprotocol.map { [$0] } ?? []))
        guard let wsi = LWS.connect(&info) else {
            forget(id)
            onEvent(ClientConnectionID(rawValue: id), .connectFailed("lws could not start the connection"))
            return
        }
        loop.connections[id]?.wsi = wsi
    }
}

/// The client's service-thread state.
///
/// `@unchecked Sendable` is safe for the same reason as `ServiceLoop`: its properties are touched
/// only by the client's service thread (inside lws callbacks and its run loop).
final class ClientLoop: @unchecked Sendable {
    struct Connection {
        var wsi: OpaquePointer?
        var endpoint: ClientEndpoint
        /// C strings handed to lws for this connection, freed when it ends.
        var strings: [UnsafeMutablePointer<CChar>]
        var received: [UInt8] = []
        var closing = false
    }

    var connections: [Int: Connection] = [:]
    /// The epoll loop the context runs on (`nil`: lws's poll() loop).
    var eventLoop: EventLoop?
}

func clientCallback(
    _ wsi: OpaquePointer?, _ reason: lws_callback_reasons, _ user: UnsafeMutableRawPointer?,
    _ input: UnsafeMutableRawPointer?, _ length: Int
) -> Int32 {
    guard let wsi, let client = LWS.owner(of: wsi, as: WebSocketClient.self) else { return 0 }
    return client.handle(wsi, reason, input, length)
}
