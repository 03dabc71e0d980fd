/// HTTP on the listener: plain requests (health, metrics, the read API) and the answers to them and
/// to refused upgrades.

/// A plain HTTP request on the same listener (health checks, later metrics and the read API).
public struct HTTPRequest: Sendable {
    /// `GET`, `POST`, … as sent.
    public var method: String
    public var path: String
    public var query: String?
    public var bearerToken: String?
    public var accept: String?
    /// The `Cookie` header, as sent.
    public var cookie: String?
}

/// A response header beyond the status, content type and length.
public struct HTTPHeader: Sendable, Equatable {
    public var name: String
    public var value: String

    public init(_ name: String, _ value: String) {
        self.name = name
        self.value = value
    }
}

public struct HTTPResponse: Sendable, Equatable {
    public var status: Int
    public var contentType: String
    public var body: String
    public var headers: [HTTPHeader]

    public init(status: Int, contentType: String = "application/json", body: String, headers: [HTTPHeader] = []) {
        self.status = status
        self.contentType = contentType
        self.body = body
        self.headers = headers
    }

    /// The status line and headers of this response as HTTP/1.1, for answers written before lws
    /// has parsed the request's version (a refused upgrade: lws would say `HTTP/1.0`, which
    /// strict clients such as Python's `websockets` do not accept). Always `Connection: close`.
    func head(extraHeaders: [(name: String, value: String)]) -> String {
        var lines = ["HTTP/1.1 \(status) \(Self.reasonPhrase(status))",
                     "Content-Type: \(contentType)",
                     "Content-Length: \(body.utf8.count)",
                     "Connection: close"]
        lines += extraHeaders.map { "\($0.name): \($0.value)" }
        return lines.joined(separator: "\r\n") + "\r\n\r\n"
    }

    /// RFC 9110's reason phrases for the statuses an upgrade is refused with.
    static func reasonPhrase(_ status: Int) -> String {
        switch status {
        case 400: "Bad Request"
        case 401: "Unauthorized"
        case 403: "Forbidden"
        case 404: "Not Found"
        case 429: "Too Many Requests"
        case 503: "Service Unavailable"
        default: "Refused"
        }
    }
}
