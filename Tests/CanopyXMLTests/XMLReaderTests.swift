import CanopyXML
import Testing

@Suite("strict XML reader")
struct XMLReaderTests {
    func read(_ text: String) throws -> XMLElementNode { try XMLReader.read(Array(text.utf8)) }

    func refusal(_ bytes: [UInt8]) -> XMLReadError? {
        do {
            _ = try XMLReader.read(bytes)
            return nil
        } catch {
            return error
        }
    }

    @Test("elements, attributes, text, references, CDATA, comments and the declaration")
    func wellFormed() throws {
        let doc = """
            \u{FEFF}<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
            <!-- a comment before the root -->
            <Request id='7' note="a &amp; b&#10;c">
              <name>x &lt;y&gt; &apos;z&apos; &quot;w&quot; &#65;&#x42;&#x1F600;</name>
              <empty/>
              <code><![CDATA[if a < b && c > d { ]] }]]></code>
              <!-- ignored -->
              <ns:tagged xmlns:ns="urn:x">名前</ns:tagged>
            </Request>
            <!-- and after -->

            """
        let root = try read(doc)
        #expect(root.name == "Request")
        #expect(root.attributes == [XMLAttribute(name: "id", value: "7"), XMLAttribute(name: "note", value: "a & b\nc")])
        #expect(root.children.map(\.name) == ["name", "empty", "code", "ns:tagged"])
        #expect(root.children[0].text == "x <y> 'z' \"w\" AB😀")
        #expect(root.children[1] == XMLElementNode(name: "empty"))
        #expect(root.children[2].text == "if a < b && c > d { ]] }")
        #expect(root.children[3].text == "名前")
        #expect(root.children[3].attributes == [XMLAttribute(name: "xmlns:ns", value: "urn:x")])
    }

    @Test("line ends read as \\n; white space in attribute values as spaces")
    func lineEnds() throws {
        let root = try read("<a b=\"1\r\n2\t3\">x\r\ny\rz<![CDATA[\r\n]]></a>")
        #expect(root.text == "x\ny\nz\n")
        #expect(root.attributes.first?.value == "1 2 3")
    }

    @Test("nesting up to the limit is read; one deeper is refused")
    func depth() throws {
        let ok = String(repeating: "<a>", count: 64) + String(repeating: "</a>", count: 64)
        var node = try read(ok)
        var depth = 1
        while let child = node.children.first {
            node = child
            depth += 1
        }
        #expect(depth == 64)
        let deep = String(repeating: "<a>", count: 65) + String(repeating: "</a>", count: 65)
        #expect(refusal(Array(deep.utf8))?.kind == .tooDeep)
        #expect(refusal(Array((String(repeating: "<a>", count: 64) + "<b/>" + String(repeating: "</a>", count: 64)).utf8))?.kind == .tooDeep)
        #expect(refusal(Array((String(repeating: "<a>", count: 100_000)).utf8))?.kind == .tooDeep)
    }

    @Test(
        "every refusal class is a thrown error, never a crash",
        arguments: [
            // Processing instructions anywhere, and the declaration anywhere but first.
            ("<Request><?pi?></Request>", XMLReadError.Kind.processingInstruction),
            ("<?pi?><Request/>", .processingInstruction),
            ("<Request/><?pi?>", .processingInstruction),
            ("<?xml-stylesheet href='x'?><a/>", .processingInstruction),
            (" <?xml version=\"1.0\"?><a/>", .processingInstruction),
            ("<a><?xml version=\"1.0\"?></a>", .processingInstruction),
            ("<?pi", .processingInstruction),
            // DTDs and entities.
            ("<!DOCTYPE a><a/>", .doctype),
            ("<!DOCTYPE a [<!ENTITY e SYSTEM \"file:///etc/passwd\">]><a>&e;</a>", .doctype),
            ("<a><!DOCTYPE a></a>", .doctype),
            ("<!ENTITY e \"x\"><a/>", .entityDeclaration),
            ("<a><!ENTITY e \"x\"></a>", .entityDeclaration),
            ("<a><!ELEMENT a ANY></a>", .entityDeclaration),
            ("<a>&e;</a>", .unknownEntity),
            ("<a b=\"&nbsp;\"/>", .unknownEntity),
            ("<a>&#0;</a>", .invalidCharacterReference),
            ("<a>&#xD800;</a>", .invalidCharacterReference),
            ("<a>&#xFFFE;</a>", .invalidCharacterReference),
            ("<a>&#x110000;</a>", .invalidCharacterReference),
            ("<a>&#99999999999999999999999;</a>", .invalidCharacterReference),
            ("<a>&#xFFFFFFFFFFFFFFFFFFFF;</a>", .invalidCharacterReference),
            ("<a>&#;</a>", .invalidCharacterReference),
            ("<a>&#x;</a>", .invalidCharacterReference),
            ("<a>&#12a;</a>", .invalidCharacterReference),
            ("<a>&#-1;</a>", .invalidCharacterReference),
            // Structure.
            ("<a></b>", .mismatchedTag),
            ("<a><b></a></b>", .mismatchedTag),
            ("<a>", .unexpectedEnd),
            ("<a", .unexpectedEnd),
            ("<a b=\"1", .unexpectedEnd),
            ("<a><!-- open", .unexpectedEnd),
            ("<a><![CDATA[ open", .unexpectedEnd),
            ("<a>&amp", .unexpectedEnd),
            ("<a/><b/>", .trailingContent),
            ("<a/>text", .trailingContent),
            ("<a/>&amp;", .trailingContent),
            ("", .noRootElement),
            ("  \n ", .noRootElement),
            ("<!-- only a comment -->", .noRootElement),
            ("<a x=\"1\" x=\"2\"/>", .duplicateAttribute),
            ("<a>\u{0}</a>", .invalidCharacter),
            ("<a>\u{1B}[31m</a>", .invalidCharacter),
            ("<a>\u{FFFF}</a>", .invalidCharacter),
            ("<a>]]></a>", .malformed),
            ("<a>&</a>", .malformed),
            ("<a>& b</a>", .malformed),
            ("<a b=1/>", .malformed),
            ("<a b/>", .malformed),
            ("<a b=\"<\"/>", .malformed),
            ("< a/>", .malformed),
            ("<1a/>", .malformed),
            ("<a/ >", .malformed),
            ("<a b=\"1\"c=\"2\"/>", .malformed),
            ("<a><!-- x -- y --></a>", .malformed),
            ("<a><![CDATA[x]]></a><![CDATA[y]]>", .malformed),
            ("<a><!foo></a>", .malformed),
            ("text<a/>", .malformed),
            ("<?xml version=\"2.0\"?><a/>", .malformed),
            ("<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?><a/>", .malformed),
            ("<?xml encoding=\"UTF-8\"?><a/>", .malformed),
            ("<?xml version=\"1.0\" standalone=\"maybe\"?><a/>", .malformed),
            ("<?xml version=\"1.0\" version=\"1.0\"?><a/>", .malformed),
            ("<?xml version=\"1.0\" foo=\"bar\"?><a/>", .malformed),
            ("<?xml version=\"1.0\"", .unexpectedEnd),
        ])
    func refused(text: String, kind: XMLReadError.Kind) {
        let error = refusal(Array(text.utf8))
        #expect(error?.kind == kind, "\(text): \(String(describing: error))")
        #expect((error?.line ?? 0) >= 1 && (error?.column ?? 0) >= 1)
    }

    @Test(
        "bytes that are not UTF-8 are refused, in names, attributes and text",
        arguments: [
            [0x3C, 0xFF, 0x2F, 0x3E],  // <\xFF/>
            [0x3C, 0x61, 0xC3, 0x2F, 0x3E],  // a truncated sequence in an element name
            [0x3C, 0x61, 0x20, 0x62, 0xE9, 0x3D, 0x22, 0x31, 0x22, 0x2F, 0x3E],  // Latin-1 é in an attribute name
            [0x3C, 0x61, 0x3E, 0xC0, 0xAF, 0x3C, 0x2F, 0x61, 0x3E],  // an overlong '/'
            [0x3C, 0x61, 0x3E, 0xED, 0xA0, 0x80, 0x3C, 0x2F, 0x61, 0x3E],  // an encoded surrogate
            [0x3C, 0x61, 0x3E, 0xF4, 0x90, 0x80, 0x80, 0x3C, 0x2F, 0x61, 0x3E],  // beyond U+10FFFF
            [0x3C, 0x61, 0x2F, 0x3E, 0x80],  // a stray continuation byte at the end
        ] as [[UInt8]])
    func invalidUTF8(bytes: [UInt8]) {
        #expect(refusal(bytes)?.kind == .invalidUTF8)
    }

    @Test("errors say where: line and column of the offending markup")
    func position() {
        let error = refusal(Array("<a>\n  <b></c>\n</a>".utf8))
        #expect(error == XMLReadError(kind: .mismatchedTag, reason: "</c> does not close <b>", line: 2, column: 6))
        #expect(error?.description == "</c> does not close <b> (line 2, column 6)")
        #expect(refusal(Array("<a>\n\n x<?pi?></a>".utf8)).map { ($0.line, $0.column) } ?? (0, 0) == (3, 3))
        #expect(refusal([0x3C, 0x61, 0x3E, 0x0A, 0x78, 0xFF]).map { ($0.line, $0.column) } ?? (0, 0) == (2, 2))
    }

    @Test("a hostile name is cut short in the message")
    func longNames() {
        let name = String(repeating: "n", count: 10_000)
        let error = refusal(Array("<\(name)></x>".utf8))
        #expect(error?.kind == .mismatchedTag)
        #expect((error?.reason.count ?? .max) < 200)
    }
}
