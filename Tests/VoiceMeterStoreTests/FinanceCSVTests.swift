import Testing
import VoiceMeterStore

@Suite("Finance CSV")
struct FinanceCSVTests {
    @Test("a cell a spreadsheet would run as a formula is escaped with a leading quote; negative numbers stay numbers")
    func formulasAreEscaped() {
        let rows = ReportRows(columns: ["user_id", "margin"], rows: [
            [#"=HYPERLINK("http://evil.example","x")"#, "-0.35"], ["+1+1", "4.11"], ["@SUM(A1)", nil], ["-2+3", "0"], ["plain", "-1"],
        ])
        #expect(rows.csv == """
            user_id,margin\r
            "'=HYPERLINK(""http://evil.example"",""x"")",-0.35\r
            '+1+1,4.11\r
            '@SUM(A1),\r
            '-2+3,0\r
            plain,-1\r

            """)
    }
}
