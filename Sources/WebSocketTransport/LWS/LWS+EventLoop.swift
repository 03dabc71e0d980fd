import CLibWebSockets
import CVoiceMeterShims
import Dispatch

/// The epoll loop (libev, through lws's event-lib plugin) that one lws context runs on.
///
/// lws's built-in loop calls poll() over every connection on every wake, which at ten thousand
/// connections costs more than the traffic itself; with epoll a wake costs only its ready sockets.
/// Created, run, stopped and destroyed on the context's service thread only.
final class EventLoop {
    private let handle: UnsafeMutableRawPointer
    private var running = false

    /// `nil` when libev cannot use epoll here (the context then uses lws's poll() loop).
    init?() {
        guard let handle = CVoiceMeterShims_event_loop_create() else { return nil }
        self.handle = handle
    }

    deinit { CVoiceMeterShims_event_loop_destroy(handle) }

    /// Creates the context on this loop; without the libev plugin installed
    /// (`libwebsockets-evlib-ev`), `nil`.
    func createContext(_ info: inout lws_context_creation_info) -> OpaquePointer? {
        var loops: [UnsafeMutableRawPointer?] = [handle]
        return loops.withUnsafeMutableBufferPointer { loops in
            info.options |= UInt64(LWS_SERVER_OPTION_LIBEV)
            info.foreign_loops = loops.baseAddress
            return lws_create_context(&info)
        }
    }

    /// Serves until `stop()` is called from a callback.
    func run() {
        running = true
        CVoiceMeterShims_event_loop_run(handle)
        running = false
    }

    /// Makes `run()` return after the current callback.
    func stop() {
        if running { CVoiceMeterShims_event_loop_break(handle) }
    }
}

extension LWS {
    /// Creates a context on an epoll loop when possible, else on lws's own poll() loop; `loop` is
    /// the epoll loop in use (keep it until the context is destroyed).
    static func createContext(_ info: inout lws_context_creation_info) -> (context: OpaquePointer?, loop: EventLoop?) {
        if let loop = EventLoop(), let context = loop.createContext(&info) { return (context, loop) }
        info.options &= ~UInt64(LWS_SERVER_OPTION_LIBEV)
        info.foreign_loops = nil
        return (lws_create_context(&info), nil)
    }

    /// Calls `wake` (which must call `lws_cancel_service`) every second until cancelled: lws
    /// re-arms its own timer only while sockets are active, so on a quiet foreign loop its
    /// timeouts would wait for traffic; the wake lets them (and once-a-second checks) run.
    static func startHeartbeat(_ wake: @escaping @Sendable () -> Void) -> any DispatchSourceTimer {
        let heartbeat = DispatchSource.makeTimerSource(queue: .global())
        heartbeat.schedule(deadline: .now() + 1, repeating: 1)
        heartbeat.setEventHandler(handler: wake)
        heartbeat.resume()
        return heartbeat
    }
}
