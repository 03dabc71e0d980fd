import VoiceMeterDomain
import VoiceMeterStore

/// The finance dashboard: one self-contained server-rendered HTML page with inline SVG charts and
/// no external assets. Chart geometry is computed with exact decimals rounded to whole pixels.
enum Dashboard {
    static let serviceColors = [("twilio", "rgb(228,87,46)"), ("deepgram", "rgb(23,190,187)"), ("cerebras", "rgb(118,176,65)"), ("elevenlabs", "rgb(255,201,20)"), ("other", "rgb(141,141,141)")]

    static func render(store: FinanceStore, now: Timestamp) throws -> String {
        let month = try store.month(now.startOfMonth)
        var html = """
            <!doctype html><html lang="en"><head><meta charset="utf-8"><title>VoiceMeter finance</title>
            <style>body{font:14px system-ui,sans-serif;margin:24px;color:#222}h1{margin:0 0 4px}h2{margin:28px 0 8px;font-size:16px}
            table{border-collapse:collapse}td,th{padding:3px 10px;border-bottom:1px solid #ddd;text-align:right}
            td:first-child,th:first-child{text-align:left}.muted{color:#777}svg{background:#fafafa;border:1px solid #eee}</style></head><body>
            <h1>VoiceMeter finance</h1><div class="muted">As of \(now) · amounts in USD</div>
            """
        html += "<h2>This month's P&amp;L</h2>" + table(month, columns: ["month", "calls", "revenue", "api_cost", "payment_fees", "fixed_costs", "gross_profit", "margin_pct", "break_even_calls"])
        html += "<h2>Margin per call (last 30 days)</h2>" + marginChart(try store.marginSeries(days: 30, before: now))
        html += "<h2>Daily cost by service (last 30 days)</h2>" + dailyCostChart(try store.dailyCosts(days: 30, before: now))
        html += "<h2>Top users this month</h2>" + table(try store.topUsers(month: now.startOfMonth, limit: 10), columns: nil)
        html += "<h2>Users near their limits</h2>" + table(try store.usersNearLimits(at: now), columns: nil)
        html += "<h2>Recent alerts</h2>" + table(try store.recentAlerts(limit: 20), columns: nil)
        return html + "</body></html>\n"
    }

    /// Margin of each call as a dot, oldest left; the zero line marks losses.
    static func marginChart(_ rows: ReportRows) -> String {
        let values = rows.rows.reversed().compactMap { $0[2].flatMap { ExactDecimal($0) } }
        guard !values.isEmpty else { return #"<p class="muted">No calls yet.</p>"# }
        let width = 760, height = 200
        let top = max(values.max()!, .zero), bottom = min(values.min()!, .zero)
        let range = max((try? top.subtracting(bottom)) ?? ExactDecimal(1), ExactDecimal("0.0001")!)
        func y(_ value: ExactDecimal) -> Int {
            let fraction = ((try? value.subtracting(bottom).multiplied(by: ExactDecimal(height - 20)).divided(by: range, scale: 0, .halfEven)) ?? .zero)
            return height - 10 - (Int(exactly: fraction.significand) ?? 0)
        }
        var svg = #"<svg id="margin-chart" width="\#(width)" height="\#(height)" viewBox="0 0 \#(width) \#(height)" role="img" aria-label="Margin per call">"#
        svg += #"<line x1="0" x2="\#(width)" y1="\#(y(.zero))" y2="\#(y(.zero))" stroke="silver" stroke-dasharray="4 3"/>"#
        for (index, value) in values.enumerated() {
            let x = 10 + (values.count == 1 ? 0 : index * (width - 20) / (values.count - 1))
            svg += #"<circle cx="\#(x)" cy="\#(y(value))" r="3" fill="\#(value.isNegative ? "rgb(192,57,43)" : "rgb(46,134,222)")"><title>\#(value)</title></circle>"#
        }
        return svg + "</svg>"
    }

    /// One stacked bar per day, a segment per service.
    static func dailyCostChart(_ rows: ReportRows) -> String {
        guard !rows.rows.isEmpty else { return #"<p class="muted">No costs yet.</p>"# }
        let width = 760, height = 220
        let days = rows.rows.map { row in (day: row[0] ?? "", costs: (1...5).map { row[$0].flatMap { ExactDecimal($0) } ?? .zero }) }
        let totals = days.map { $0.costs.reduce(ExactDecimal.zero) { (try? $0.adding($1)) ?? $0 } }
        let top = max(totals.max()!, ExactDecimal("0.0001")!)
        let barWidth = min(40, max(4, (width - 20) / days.count - 4))
        var svg = #"<svg id="daily-cost-chart" width="\#(width)" height="\#(height + 20)" viewBox="0 0 \#(width) \#(height + 20)" role="img" aria-label="Daily cost by service">"#
        for (index, day) in days.enumerated() {
            let x = 10 + index * (barWidth + 4)
            var base = height
            for (segment, cost) in day.costs.enumerated() where cost > .zero {
                let pixels = Int(exactly: ((try? cost.multiplied(by: ExactDecimal(height - 10)).divided(by: top, scale: 0, .halfEven)) ?? .zero).significand) ?? 0
                base -= pixels
                svg += #"<rect x="\#(x)" y="\#(base)" width="\#(barWidth)" height="\#(pixels)" fill="\#(serviceColors[segment].1)"><title>\#(escape(day.day)) \#(serviceColors[segment].0): \#(cost)</title></rect>"#
            }
        }
        for (index, service) in serviceColors.enumerated() {
            svg += #"<rect x="\#(10 + index * 110)" y="\#(height + 6)" width="10" height="10" fill="\#(service.1)"/><text x="\#(24 + index * 110)" y="\#(height + 15)" font-size="11">\#(service.0)</text>"#
        }
        return svg + "</svg>"
    }

    static func table(_ rows: ReportRows, columns: [String]?) -> String {
        guard !rows.rows.isEmpty else { return #"<p class="muted">Nothing to show.</p>"# }
        let shown = columns ?? rows.columns
        let indices = shown.compactMap { rows.columns.firstIndex(of: $0) }
        var html = "<table><tr>" + indices.map { "<th>\(escape(rows.columns[$0]))</th>" }.joined() + "</tr>"
        for row in rows.rows {
            html += "<tr>" + indices.map { "<td>\(escape(row[$0] ?? ""))</td>" }.joined() + "</tr>"
        }
        return html + "</table>"
    }

    static func escape(_ text: String) -> String {
        var escaped = ""
        for character in text {
            switch character {
            case "&": escaped += "&amp;"
            case "<": escaped += "&lt;"
            case ">": escaped += "&gt;"
            case "\"": escaped += "&quot;"
            case "'": escaped += "&#39;"
            default: escaped.append(character)
            }
        }
        return escaped
    }
}
