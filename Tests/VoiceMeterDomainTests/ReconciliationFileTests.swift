import Testing
import VoiceMeterDomain

@Suite("Provider cost files")
struct ReconciliationFileTests {
    @Test("CSV handles quotes, embedded commas and CRLF, and skips blank and comment lines")
    func csv() throws {
        let records = try CSVReader.records("a,b\r\n\"x, y\",\"say \"\"hi\"\"\"\r\n\n# note\nlast,row")
        #expect(records.map(\.fields) == [["a", "b"], ["x, y", #"say "hi""#], ["last", "row"]])
        #expect(records.map(\.line) == [1, 2, 5])
        #expect(throws: CSVReader.SyntaxError.self) { try CSVReader.records("a,\"open\n") }
    }

    @Test("a Twilio export's negative prices are costs; the CallSid is the call id")
    func twilio() throws {
        let costs = try ReconciliationFile.twilio("""
            "CallSid","From","To","Duration","Price","PriceUnit"
            "CA0001","+15550001","+15550002","300","-0.07000","USD"
            "CA0002","+15550001","+15550003","61","-0.02800","USD"
            """)
        #expect(costs == [ReportedCost(line: 2, callID: "CA0001", service: "twilio", actualCost: ExactDecimal("0.07")!),
                          ReportedCost(line: 3, callID: "CA0002", service: "twilio", actualCost: ExactDecimal("0.028")!)])
    }

    @Test("bad files say which line and what to fix", arguments: [
        ("CallSid,Duration\nCA1,60\n", "no 'Price' column"),
        ("CallSid,Price\nCA1,cheap\n", "line 2: Price 'cheap' is not a decimal number"),
        ("CallSid,Price\nCA1\n", "line 2: 1 fields for 2 columns"),
        ("", "the file is empty"),
    ])
    func twilioErrors(text: String, hint: String) {
        let error = #expect(throws: PriceInputError.self) { try ReconciliationFile.twilio(text) }
        #expect(error?.description.contains(hint) == true, "\(error?.description ?? "")")
    }

    @Test("the generic format takes call_id, service and a non-negative actual_cost")
    func generic() throws {
        #expect(try ReconciliationFile.generic("call_id,service,actual_cost\nCA1,deepgram,0.0295\n").first?.actualCost == ExactDecimal("0.0295")!)
        let error = #expect(throws: PriceInputError.self) { try ReconciliationFile.generic("call_id,service,actual_cost\nCA1,deepgram,-1\n") }
        #expect(error?.description.contains("negative") == true)
    }
}
