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

    /// The members `parseObject` hands over when it wants `wanted`, in order, as (name, value).
    private func selected(_ text: String, wanted: Set<String>) throws -> (members: [(String, JSONValue)], notAnObject: JSONValue?) {
        var members: [(String, JSONValue)] = []
        let notAnObject = try JSONParser.parseObject(Array(text.utf8), selecting: { name -> String? in
            let text = String(decoding: name, as: UTF8.self)
            return wanted.contains(text) ? text : nil
        }, { members.append(($0, $1)) })
        return (members, notAnObject)
    }

    @Test("reading an object's members without a tree: wanted names (escaped too) in order, the rest validated and dropped")
    func selectedMembers() throws {
        let read = try selected(#"{"a": 1, "skip": {"x": [1, 2]}, "\u0062": "two", "caf\u00e9": null, "a": "again"}"#, wanted: ["a", "b", "café"])
        #expect(read.notAnObject == nil)
        #expect(read.members.map(\.0) == ["a", "b", "café", "a"])
        #expect(read.members.map(\.1) == [.number("1"), .string("two"), .null, .string("again")])
        #expect(try selected("[1, 2]", wanted: ["a"]).notAnObject == .array([.number("1"), .number("2")]))
        #expect(try selected(" {} ", wanted: ["a"]).members.isEmpty)
        for malformed in [#"{"skip": [1,]}"#, #"{"a": 1} trailing"#, #"{"a" 1}"#, #"{"a\x": 1}"#, "{\"tab\there\": 1}"] {
            #expect(throws: JSONSyntaxError.self) { try selected(malformed, wanted: ["a"]) }
        }
    }
}
