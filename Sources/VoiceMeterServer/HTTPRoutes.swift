import VoiceMeterFinanceAPI
import VoiceMeterLedger
import WebSocketTransport

/// Plain HTTP on the listener: health, readiness and metrics for operators, and the finance read
/// API and dashboard. Answers never block the listener's thread (finance queries answer later).
struct HTTPRoutes: Sendable {
    let readiness: ReadinessMonitor
    let writers: LedgerWriters
    let finance: FinanceAPI

    func respond(to request: HTTPRequest, reply: @escaping @Sendable (HTTPResponse) -> Void) {
        guard request.method == "GET" else {
            return reply(HTTPResponse(status: 405, body: #"{"error":"method_not_allowed","message":"only GET is served here"}"# + "\n",
                                      headers: [HTTPHeader("Allow", "GET")]))
        }
        if request.path.hasPrefix("/v1/calls/") || request.path.hasPrefix("/v1/users/") || request.path.hasPrefix("/v1/finance/")
            || request.path == "/dashboard" {
            finance.respond(to: request, reply: reply)
            return
        }
        reply(health(request))
    }

    private func health(_ request: HTTPRequest) -> HTTPResponse {
        switch request.path {
        case "/healthz":
            return HTTPResponse(status: 200, body: #"{"status":"ok"}"# + "\n")
        case "/metrics":
            return HTTPResponse(status: 200, contentType: "text/plain; version=0.0.4", body: MetricsExport.render())
        case "/readyz":
            var reason = readiness.current
            // Reachable is not enough: a writer that cannot commit (read-only, demoted) is not ready.
            if reason == .ok, writers.isInOutage { reason = .ledgerCannotCommit }
            return HTTPResponse(status: reason == .ok ? 200 : 503,
                                body: #"{"status":"\#(reason == .ok ? "ready" : "not_ready")","reason":"\#(reason.rawValue)"}"# + "\n")
        case "/v1/stream":
            return HTTPResponse(status: 426, body: #"{"error":"upgrade_required","message":"connect with a WebSocket client, subprotocol voicemeter.v1"}"# + "\n")
        default:
            return HTTPResponse(status: 404, body: #"{"error":"not_found","message":"endpoints: /v1/stream (WebSocket), /healthz, /readyz, /metrics, /v1/calls/{id}/costs, /v1/users/{id}/spend, /v1/finance/margins, /v1/finance/months (docs/openapi.yaml)"}"# + "\n")
        }
    }
}
