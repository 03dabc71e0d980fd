import Testing
import VoiceMeterDomain

@Suite("Exact decimals")
struct ExactDecimalTests {
    private func d(_ text: String) -> ExactDecimal { ExactDecimal(text)! }

    @Test("JSON numbers and decimal strings parse exactly", arguments: [
        ("412", "412"), ("0.5", "0.5"), ("-0.0059", "-0.0059"), ("0.0000001", "0.0000001"),
        ("1e-7", "0.0000001"), ("1.5E3", "1500"), ("2e+2", "200"), ("4.990", "4.99"), ("0", "0"), ("-0", "0"),
        ("0.1000000000000000000000000001", "0.1000000000000000000000000001"),
        ("1795374032.134", "1795374032.134"),
        ("-12345678901234567890123.456789012345", "-12345678901234567890123.456789012345"),
        ("18446744073709551616.5", "18446744073709551616.5"),
        ("9223372036854775807.000", "9223372036854775807"), ("-9223372036854775808.0", "-9223372036854775808"),
        ("92233720368547758070.000", "92233720368547758070"), ("922337203685477.5800", "922337203685477.58"), ("-0.00120", "-0.0012"),
    ])
    func parses(text: String, expected: String) {
        #expect(ExactDecimal(text)?.description == expected)
    }

    @Test("malformed or unrepresentable text is refused", arguments: [
        "", "-", ".5", "5.", "1..2", "1.2.3", "+1", "1e", "1e+", "0x10", "1,5", " 1", "1 ", "NaN", "Infinity",
        "1e-40", "123456789012345678901234567890123456789012", "1e1001",
    ])
    func refuses(text: String) {
        #expect(ExactDecimal(text) == nil)
    }

    @Test("equality and hashing are by value, whatever the scale")
    func valueSemantics() {
        #expect(d("1.50") == d("1.5"))
        #expect(Set([d("1.50"), d("1.5"), d("1.500")]).count == 1)
        #expect(d("-0.01") < d("0"))
        #expect(d("0.0059") < d("0.014"))
        #expect(d("100") > d("99.9999999999"))
    }

    @Test("0.1 + 0.2 is exactly 0.3")
    func noBinaryDrift() throws {
        #expect(try d("0.1").adding(d("0.2")) == d("0.3"))
        var total = ExactDecimal.zero
        for _ in 0..<1_000 { total = try total.adding(d("0.001")) }
        #expect(total == d("1"))
    }

    @Test("multiplication is exact: 50,000 tokens at $0.10 per million is $0.005")
    func multiplication() throws {
        #expect(try d("50000").multiplied(by: d("0.0000001")) == d("0.005"))
        #expect(try d("2000").multiplied(by: d("0.00015")) == d("0.3"))
        #expect(try d("-1.5").multiplied(by: d("2")) == d("-3"))
    }

    @Test("division rounds once, with the rule asked for")
    func division() throws {
        // 10 s of a $0.0059/min price: 0.000983333… rounded half-even at 1e-10.
        let tenSeconds = try d("10").multiplied(by: d("0.0059")).divided(by: d("60"), scale: 10, .halfEven)
        #expect(tenSeconds == d("0.0009833333"))
        #expect(try d("1").divided(by: d("3"), scale: 4, .up) == d("0.3334"))
        #expect(try d("1").divided(by: d("3"), scale: 4, .down) == d("0.3333"))
        #expect(try d("-1").divided(by: d("3"), scale: 4, .up) == d("-0.3333"))
        #expect(try d("-1").divided(by: d("3"), scale: 4, .down) == d("-0.3334"))
    }

    @Test("half-even rounding sends ties to the even digit", arguments: [
        ("0.125", "0.12"), ("0.135", "0.14"), ("-0.125", "-0.12"), ("0.1251", "0.13"), ("2.5", "2"), ("3.5", "4"),
    ])
    func halfEven(text: String, expected: String) throws {
        let scale = expected.contains(".") ? expected.split(separator: ".")[1].count : 0
        #expect(try d(text).rounded(scale: scale, .halfEven) == d(expected))
    }

    @Test("billing increments round up to whole multiples: 301 s is 6 minutes")
    func increments() throws {
        #expect(try d("301").roundedUp(toMultipleOf: d("60")) == d("360"))
        #expect(try d("300").roundedUp(toMultipleOf: d("60")) == d("300"))
        #expect(try d("0.2").roundedUp(toMultipleOf: d("1")) == d("1"))
        #expect(try d("0").roundedUp(toMultipleOf: d("60")) == d("0"))
    }

    @Test("formatting pads or rounds to the requested places")
    func formatting() {
        #expect(d("4.11584").formatted(scale: 2) == "4.12")
        #expect(d("10").formatted(scale: 2) == "10.00")
        #expect(d("0.0000001").formatted(scale: 10) == "0.0000001000")
        #expect(d("-0.5").formatted(scale: 0) == "0")
    }

    @Test("overflow is an error, never a wrap or a crash")
    func overflow() {
        let huge = d("99999999999999999999999999999999999999")
        #expect(throws: DecimalOverflow.self) { try huge.multiplied(by: huge) }
        #expect(throws: DecimalOverflow.self) { try huge.adding(huge) }
        #expect(throws: DecimalOverflow.self) { try huge.adding(d("0.000000000000000000000000000001")) }
    }
}
