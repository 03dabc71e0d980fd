import Testing
import VoiceMeterDomain

@Suite("Strict JSON with exact numbers")
struct JSONParserTests {
    @Test("numbers keep their exact text; strings decode escapes and surrogate pairs")
    func values() throws {
        let value = try JSONParser.parse(#"{"amount": 0.1000000000000000000001, "big": -12e-3, "text": "a\"b\\c\n\u00e9\ud83d\udcde", "list": [true, false, null], "o": {}}"#)
        #expect(value["amount"] == .number("0.1000000000000000000001"))
        #expect(value["big"] == .number("-12e-3"))
        #expect(value["text"] == .string("a\"b\\c\né📞"))
        #expect(value["list"] == .array([.bool(true), .bool(false), .null]))
        #expect(value["o"] == .object([]))
        #expect(value["missing"] == nil)
    }

    @Test("serializing and parsing again gives the same value")
    func roundTrip() throws {
        let text = #"{"a":[1,-0.5,"x\u0001y"],"b":{"c":null}}"#
        let value = try JSONParser.parse(text)
        #expect(try JSONParser.parse(value.serialized) == value)
        #expect(value.serialized == #"{"a":[1,-0.5,"x\u0001y"],"b":{"c":null}}"#)
    }

    @Test("malformed JSON is refused", arguments: [
        "", "{", "}", "{\"a\" 1}", "{\"a\":1,}", "[1,]", "01", "1.", ".5", "-", "1e", "+1", "tru", "nul",
        "\"unterminated", "\"bad \\x escape\"", "\"\\ud83d alone\"", "\"\\udcde\"", "{\"a\":1} trailing", "\"tab\there\"",
        "NaN", "Infinity", "[1 2]", "{1: 2}",
    ])
    func refused(text: String) {
        #expect(throws: JSONSyntaxError.self) { try JSONParser.parse(text) }
    }

    @Test("invalid UTF-8 inside a string is refused")
    func invalidUTF8() {
        #expect(throws: JSONSyntaxError.self) { try JSONParser.parse([0x22, 0xC3, 0x28, 0x22]) }
        #expect(throws: JSONSyntaxError.self) { try JSONParser.parse([0x22, 0xED, 0xA0, 0x80, 0x22]) }
    }

    @Test("nesting deeper than the limit is refused instead of exhausting the stack")
    func depthLimit() throws {
        let deep = String(repeating: "[", count: 1_000) + String(repeating: "]", count: 1_000)
        #expect(throws: JSONSyntaxError.self) { try JSONParser.parse(deep) }
        let fine = String(repeating: "[", count: JSONParser.maximumDepth) + String(repeating: "]", count: JSONParser.maximumDepth)
        #expect(throws: Never.self) { try JSONParser.parse(fine) }
    }
}
