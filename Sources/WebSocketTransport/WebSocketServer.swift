import Foundation
import Synchronization

/// Identifies one WebSocket connection for as long as it is open.
public struct ConnectionID: Hashable, Sendable, CustomStringConvertible {
    public let rawValue: Int
    public var description: String { "conn-\(rawValue)" }

    public init(rawValue: Int) {
        self.rawValue = rawValue
    }
}

/// What the server knows of a WebSocket upgrade request when deciding whether to accept it.
public struct UpgradeRequest: Sendable {
    public var peer: String
    /// The token of an `Authorization: Bearer …` header.
    public var bearerToken: String?
    public var origin: String?
}

public enum UpgradeDecision: Sendable, Equatable {
    case accept
    /// Refuse with this HTTP status before any WebSocket exists.
    case refuse(status: Int, reason: String)
}

/// What the listener does with a connection after handing it a message.
public enum ReceiveDisposition: Sendable, Hashable {
    case keepReading
    /// Stop reading its socket (backpressure) until `resumeAllPaused`.
    case pauseReading
    /// Close it at once with this WebSocket close code and reason, without reading more.
    case close(code: UInt16, reason: String)
}

/// The application side of the listener. Called on the service thread: every method must return
/// quickly (hand work to other queues) and must not call back into lws. The listener carries
/// bytes; what they mean is the delegate's.
public protocol WebSocketServerDelegate: AnyObject, Sendable {
    func authorize(_ request: UpgradeRequest) -> UpgradeDecision
    /// A connection `authorize` accepted is open; `request` is what it was accepted on.
    func connectionOpened(_ connection: ConnectionID, request: UpgradeRequest)
    /// `uptimeNanoseconds` is when it arrived (the monotonic clock the listener's own limits read).
    func received(_ message: InboundMessage, from connection: ConnectionID, at uptimeNanoseconds: UInt64) -> ReceiveDisposition
    func connectionClosed(_ connection: ConnectionID)
    /// Answers a plain HTTP request by calling `reply` once, at once or later from any thread
    /// (a database query must not block the service thread).
    func respond(to request: HTTPRequest, reply: @escaping @Sendable (HTTPResponse) -> Void)
}

public struct WebSocketServerConfiguration: Sendable {
    /// The address to bind exactly (no other interface): an IPv4 address, an IPv6 literal, or `0.0.0.0`.
    public var host = "127.0.0.1"
    /// 0 picks a free port (tests); `WebSocketServer.port` tells which.
    public var port = 8787
    public var path = "/v1/stream"
    public var subprotocol = "voicemeter.v1"
    /// PEM files; both set means TLS (1.2 and newer only, no compression).
    public var tlsCertificatePath: String?
    public var tlsPrivateKeyPath: String?
    /// When set, upgrades whose `Origin` is not listed are refused with 403.
    public var allowedOrigins: [String]?
    public var limits = WebSocketLimits()

    public init() {}
}

public struct WebSocketServerError: Error, CustomStringConvertible {
    public var description: String
}

/// A libwebsockets server on one service thread that owns the lws context. It carries bytes:
/// whole WebSocket messages and HTTP requests in (to its delegate), messages and answers out.
///
/// No other thread touches lws except through `ServiceWake`: `send`, `pauseReceiving`,
/// `resumeReceiving` and `close` leave work in `Outboxes` and wake the loop, which performs it on
/// `LWS_CALLBACK_EVENT_WAIT_CANCELLED` and writable callbacks (one `lws_write` each). It can be
/// sent to before it starts (nothing is connected yet), so its users can be built before the
/// delegate that feeds them.
public final class WebSocketServer: Sendable {
    public let configuration: WebSocketServerConfiguration
    let outboxes: Outboxes
    let loop: ServiceLoop
    let serviceWake = ServiceWake()
    private let startup = Mutex<(started: Bool, port: Int?, error: String?)>((false, nil, nil))
    private let finished = DispatchSemaphore(value: 0)

    public init(configuration: WebSocketServerConfiguration) {
        self.configuration = configuration
        self.outboxes = Outboxes(capacityPerConnection: configuration.limits.outboxMessagesPerConnectionMax)
        self.loop = ServiceLoop(limits: configuration.limits)
    }

    /// The port the server listens on (after `start`).
    public var port: Int { startup.withLock { $0.port ?? 0 } }

    /// Creates the context on a new service thread and returns once it listens (or failed to);
    /// from then on `delegate` gets every event. Called once.
    public func start(delegate: any WebSocketServerDelegate) throws {
        let startedBefore = startup.withLock { startup in
            defer { startup.started = true }
            return startup.started
        }
        precondition(!startedBefore, "a WebSocketServer starts once")
        // Set before the service thread exists, read only on it.
        loop.delegate = delegate
        let ready = DispatchSemaphore(value: 0)
        let thread = Thread { [self] in
            self.run(signalling: ready)
        }
        thread.name = "voicemeter.lws"
        thread.stackSize = 1 << 20
        thread.start()
        ready.wait()
        if let error = startup.withLock({ $0.error }) { throw WebSocketServerError(description: error) }
    }

    /// Queues a message for a connection; dropped silently if the connection is gone.
    public func send(_ payload: [UInt8], to connection: ConnectionID, order: OutboundOrder = .inOrder) {
        if outboxes.enqueue(payload, for: connection.rawValue, order: order) == true { serviceWake.wake() }
    }

    /// First step of a graceful stop: refuse new upgrades and stop reading every connection, so
    /// nothing new arrives while in-flight work is committed and acknowledged.
    /// Returns once the service thread has applied it.
    public func stopReceiving() {
        loop.refusingUpgrades.store(true, ordering: .relaxed)
        if outboxes.post(.stopReceivingAll) { serviceWake.wake() }
        _ = loop.receivingStopped.wait(timeout: .now() + 2)
    }

    /// Reads again from every connection the delegate paused; cheap when none is paused.
    public func resumeAllPaused() {
        guard loop.pausedCount.load(ordering: .relaxed) > 0 else { return }
        if outboxes.post(.resumeAllPaused) { serviceWake.wake() }
    }

    /// Closes a connection with a WebSocket close code, after the messages already queued for it.
    public func close(_ connection: ConnectionID, code: UInt16, reason: String) {
        if outboxes.post(.close(connection.rawValue, code: code, reason: reason)) { serviceWake.wake() }
    }

    /// Closes every connection with 1001 (going away), stops listening and returns when the service
    /// thread has finished, at the latest after `drainSeconds`.
    public func shutdown(drainSeconds: Double = 5) {
        guard startup.withLock({ $0.started }) else { return }
        loop.shutdownDeadline.withLock { $0 = Date().addingTimeInterval(drainSeconds) }
        _ = outboxes.requestStop()
        // The loop sleeps until an event; wake it every 50 ms so it notices the deadline.
        repeat { serviceWake.wake() } while finished.wait(timeout: .now() + .milliseconds(50)) == .timedOut
    }

    /// Stopping and every connection closed, or the drain deadline passed.
    func shouldStopServing() -> Bool {
        guard outboxes.isStopping else { return false }
        let deadline = loop.shutdownDeadline.withLock { $0 } ?? Date()
        return loop.connections.isEmpty || Date() >= deadline
    }

    // MARK: The service thread

    private func run(signalling ready: DispatchSemaphore) {
        LWS.quietLogging()
        let settings = ContextSettings(
            protocolName: configuration.subprotocol, callback: serverCallback, port: configuration.port, interface: configuration.host,
            owner: Unmanaged.passUnretained(self).toOpaque(), headerTimeoutSeconds: configuration.limits.headerTimeoutSeconds,
            certificatePath: configuration.tlsCertificatePath, privateKeyPath: configuration.tlsPrivateKeyPath
        )
        LWS.withContext(settings) { context in
            guard let context else {
                startup.withLock { $0.error = "cannot listen on \(configuration.host):\(configuration.port) (address in use, not local, or bad TLS files)" }
                ready.signal()
                return
            }
            loop.bind(to: Thread.current)
            loop.eventLoop = context.eventLoop
            serviceWake.bind(context)
            startup.withLock { $0.port = context.listenPort }
            ready.signal()
            let heartbeat = LWS.startHeartbeat { [serviceWake] in serviceWake.wake() }
            context.serve(until: shouldStopServing)
            heartbeat.cancel()
            serviceWake.unbind()
            loop.eventLoop = nil
        }
        finished.signal()
    }
}

/// State that only the service thread touches, reached from the C callback.
///
/// `@unchecked Sendable` is safe because every mutable property is read and written only on the
/// service thread (the C callback runs there, and `assertOnServiceThread` checks it in debug
/// builds), except `delegate`, written once by `start` before the service thread is created
/// (`Thread.start` orders it before every read), and the `Mutex`, atomics and semaphore that other
/// threads use.
final class ServiceLoop: @unchecked Sendable {
    struct Connection {
        var wsi: OpaquePointer
        var peer: String
        var assembler: MessageAssembler
        var pendingClose: (code: UInt16, reason: String)?
        var paused = false
        /// When anything last arrived from the peer (a message or a pong).
        var lastHeardNanoseconds: UInt64
        /// A ping is to be sent at the next writable callback.
        var pingDue = false
        /// When a ping was asked for; cleared by anything heard from the peer.
        var pingSentNanoseconds: UInt64?

        /// Something arrived from the peer: it is alive, no ping is owed.
        mutating func noteHeard(at now: UInt64) {
            lastHeardNanoseconds = now
            pingSentNanoseconds = nil
            pingDue = false
        }
    }

    let limits: WebSocketLimits
    /// Set by `start` before the service thread exists.
    var delegate: (any WebSocketServerDelegate)?
    let shutdownDeadline = Mutex<Date?>(nil)
    var connections: [Int: Connection] = [:]
    var connectionsPerPeer: [String: Int] = [:]
    /// HTTP requests waiting for their answer, by connection id.
    var httpConnections: [Int: OpaquePointer] = [:]
    /// HTTP responses waiting for their connection to become writable, by connection id.
    var pendingHTTP: [Int: HTTPResponse] = [:]
    var nextID = 0
    var closingAll = false
    /// The epoll loop the context runs on (`nil`: lws's poll() loop).
    var eventLoop: EventLoop?
    /// When idle connections were last looked for.
    var idleCheckedNanoseconds: UInt64 = 0
    /// How many connections are paused, readable from any thread to skip needless wakes.
    let pausedCount = Atomic<Int>(0)
    /// Set by `stopReceiving`: upgrades are refused with 503.
    let refusingUpgrades = Atomic<Bool>(false)
    /// Signalled by the service thread once every connection has stopped being read.
    let receivingStopped = DispatchSemaphore(value: 0)
    private var serviceThread: Thread?

    init(limits: WebSocketLimits) {
        self.limits = limits
    }

    func bind(to thread: Thread) { serviceThread = thread }

    func assertOnServiceThread() {
        assert(serviceThread == nil || Thread.current == serviceThread, "lws state touched off the service thread")
    }

    func allocateID() -> Int {
        nextID += 1
        return nextID
    }
}
