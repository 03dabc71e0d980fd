// VoiceMeterFinanceAPI: the finance read API and dashboard (HTTP on the server's listener, finance
// tokens only). It reads finance views through its own connection and queue; it never touches
// metering or the ledger writers, and takes token checks and the clock from its owner.

import Dispatch
import Foundation
import PostgresClient
import VoiceMeterDomain
import VoiceMeterStore
import WebSocketTransport

/// The read API for finance tools, on the server's listener: finance tokens only (an ingest token
/// gets 403), JSON by default and CSV with `Accept: text/csv`, bad parameters 400 with a reason.
/// Queries run on a queue and connection of their own, never on the WebSocket service thread.
/// Described in docs/openapi.yaml.
package final class FinanceAPI: Sendable {
    /// What kind of token a secret is (`nil`: unknown or revoked).
    private let tokenKind: @Sendable (String) -> TokenKind?
    private let queue = DispatchQueue(label: "voicemeter.finance-api")
    private let connection: ConnectionSlot
    /// The server's clock: "today" and "this month" of the dashboard and of a user's spend.
    private let now: @Sendable () -> Timestamp

    package init(tokenKind: @escaping @Sendable (String) -> TokenKind?, options: PostgresConnectionOptions,
                 now: @escaping @Sendable () -> Timestamp) {
        self.tokenKind = tokenKind
        self.now = now
        connection = ConnectionSlot(options: options)
    }

    package func respond(to request: HTTPRequest, reply: @escaping @Sendable (HTTPResponse) -> Void) {
        let parameters = Self.parameters(request.query)
        // A browser cannot send a bearer header to a page it opens: the dashboard takes ?token=
        // once, moves it into an HttpOnly cookie and sends the browser back to a URL without it.
        let dashboard = request.path == "/dashboard"
        let linkToken = dashboard ? parameters["token"] : nil
        let token = request.bearerToken ?? linkToken ?? (dashboard ? Self.cookie(Self.dashboardCookie, in: request.cookie) : nil)
        switch token.flatMap(tokenKind) {
        case nil: return reply(Self.error(401, "unauthorized", "send Authorization: Bearer <finance token> (voicemeter tokens create NAME --kind finance)"))
        case .ingest: return reply(Self.error(403, "forbidden", "an ingest token cannot read finance data; use a finance token"))
        case .finance: break
        }
        if let linkToken, request.bearerToken == nil {
            return reply(HTTPResponse(status: 303, contentType: "text/plain", body: "", headers: [
                HTTPHeader("Location", "/dashboard"),
                HTTPHeader("Set-Cookie", "\(Self.dashboardCookie)=\(linkToken); Path=/dashboard; HttpOnly; SameSite=Strict; Max-Age=28800"),
                HTTPHeader("Cache-Control", "no-store"), HTTPHeader("Referrer-Policy", "no-referrer"),
            ]))
        }
        let parts = request.path.split(separator: "/").map(String.init)
        let wantsCSV = request.accept?.contains("text/csv") == true
        queue.async { [connection, now] in
            do {
                reply(try connection.use { try Self.route(parts, parameters, wantsCSV, FinanceStore(connection: $0), now: now()) })
            } catch let failure as FinanceRequestError {
                reply(Self.error(failure.status, failure.code, failure.message))
            } catch {
                reply(Self.error(503, "unavailable", "the database cannot be read right now; retry shortly"))
            }
        }
    }

    private static func route(_ parts: [String], _ parameters: [String: String], _ wantsCSV: Bool,
                              _ store: FinanceStore, now: Timestamp) throws -> HTTPResponse {
        if parts.count == 4, parts[0] == "v1", parts[1] == "calls", parts[3] == "costs" {
            let callID = parts[2]
            guard let breakdown = try store.callMargin(callID).objects.first else {
                throw FinanceRequestError(404, "not_found", "no admitted call '\(callID)'")
            }
            let body = JSONValue.object([
                ("call_id", .string(callID)), ("breakdown", breakdown), ("events", .array(try store.callEvents(callID).objects)),
            ])
            return HTTPResponse(status: 200, body: body.serialized)
        }
        if parts.count == 4, parts[0] == "v1", parts[1] == "users", parts[3] == "spend" {
            let userID = parts[2]
            guard let spend = try store.userSpend(userID, at: now).objects.first else {
                throw FinanceRequestError(404, "not_found", "no spend or budget settings for user '\(userID)'")
            }
            return HTTPResponse(status: 200, body: spend.serialized)
        }
        switch parts {
        case ["dashboard"]:
            return HTTPResponse(status: 200, contentType: "text/html; charset=utf-8", body: try Dashboard.render(store: store, now: now),
                                headers: [HTTPHeader("Cache-Control", "no-store"), HTTPHeader("Referrer-Policy", "no-referrer")])
        case ["v1", "finance", "margins"]:
            let from = try day(parameters["from"], "from")
            let to = try day(parameters["to"], "to")
            guard from < to else { throw FinanceRequestError(400, "bad_request", "'from' must be before 'to'") }
            return render(try store.margins(from: from, to: to, userID: parameters["user"]), csv: wantsCSV)
        case ["v1", "finance", "months"]:
            return render(try store.months(), csv: wantsCSV)
        default:
            throw FinanceRequestError(404, "not_found", "finance endpoints: /v1/calls/{id}/costs, /v1/users/{id}/spend, /v1/finance/margins?from=YYYY-MM-DD&to=YYYY-MM-DD, /v1/finance/months")
        }
    }

    private static func render(_ rows: ReportRows, csv: Bool) -> HTTPResponse {
        csv ? HTTPResponse(status: 200, contentType: "text/csv", body: rows.csv) : HTTPResponse(status: 200, body: rows.json)
    }

    private static func day(_ text: String?, _ name: String) throws -> Timestamp {
        guard let text else { throw FinanceRequestError(400, "bad_request", "'\(name)' is required: a day (YYYY-MM-DD) or an RFC 3339 time") }
        guard let instant = Timestamp(dayOrInstant: text) else {
            throw FinanceRequestError(400, "bad_request", "'\(name)' must be a day (YYYY-MM-DD) or an RFC 3339 time, got '\(text.prefix(40))'")
        }
        return instant
    }

    /// `a=1&b=x%20y` → ["a": "1", "b": "x y"].
    /// The dashboard's session cookie: the finance token, HttpOnly, sent only to `/dashboard`.
    static let dashboardCookie = "voicemeter_finance"

    /// The value of cookie `name` in a `Cookie` header.
    static func cookie(_ name: String, in header: String?) -> String? {
        for pair in (header ?? "").split(separator: ";") {
            let parts = pair.split(separator: "=", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
            if parts.count == 2, parts[0] == name { return parts[1] }
        }
        return nil
    }

    static func parameters(_ query: String?) -> [String: String] {
        var result: [String: String] = [:]
        for pair in (query ?? "").split(separator: "&") {
            let parts = pair.split(separator: "=", maxSplits: 1).map { String($0).replacingOccurrences(of: "+", with: " ").removingPercentEncoding ?? String($0) }
            if parts.count == 2 { result[parts[0]] = parts[1] }
        }
        return result
    }

    private static func error(_ status: Int, _ code: String, _ message: String) -> HTTPResponse {
        HTTPResponse(status: status, body: #"{"error":"\#(code)","message":\#(JSONValue.string(message).serialized)}"# + "\n")
    }
}

struct FinanceRequestError: Error {
    var status: Int
    var code: String
    var message: String
    init(_ status: Int, _ code: String, _ message: String) {
        self.status = status
        self.code = code
        self.message = message
    }
}
