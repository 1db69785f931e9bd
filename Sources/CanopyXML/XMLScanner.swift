/// The reader's state over a document's decoded scalars. Every access is bounds-checked through `peek`, so
/// malformed input ends in a thrown `XMLReadError`, never an index trap.
struct XMLScanner {
    let s: [Unicode.Scalar]
    var i = 0
    let maxDepth: Int

    init(scalars: [Unicode.Scalar], maxDepth: Int) {
        s = scalars
        self.maxDepth = max(1, maxDepth)
    }

    // MARK: errors

    /// An error at scalar `index` of `scalars`, with its line and column.
    static func error(_ kind: XMLReadError.Kind, _ reason: String, _ scalars: [Unicode.Scalar], at index: Int) -> XMLReadError {
        var line = 1
        var column = 1
        for c in scalars[..<min(max(0, index), scalars.count)] {
            if c == "\n" {
                line += 1
                column = 1
            } else {
                column += 1
            }
        }
        return XMLReadError(kind: kind, reason: reason, line: line, column: column)
    }

    func fail(_ kind: XMLReadError.Kind, _ reason: String, at index: Int? = nil) -> XMLReadError {
        Self.error(kind, reason, s, at: index ?? i)
    }

    /// A name for a message: at most 40 characters of it, so a hostile name cannot make a huge answer.
    static func shown(_ name: String) -> String {
        name.unicodeScalars.count <= 40 ? name : String(String.UnicodeScalarView(name.unicodeScalars.prefix(40))) + "..."
    }

    // MARK: cursor

    var atEnd: Bool { i >= s.count }

    func peek(_ offset: Int = 0) -> Unicode.Scalar? {
        let j = i + offset
        return j < s.count ? s[j] : nil
    }

    func startsWith(_ literal: String) -> Bool {
        var j = i
        for c in literal.unicodeScalars {
            guard j < s.count, s[j] == c else { return false }
            j += 1
        }
        return true
    }

    /// Skips white space; says whether there was any.
    @discardableResult
    mutating func skipSpace() -> Bool {
        let start = i
        while let c = peek(), XMLCharacters.isSpace(c) { i += 1 }
        return i > start
    }

    mutating func name(_ what: String) throws(XMLReadError) -> String {
        guard let first = peek(), XMLCharacters.isNameStart(first) else {
            let found = peek().map { "'\($0.escaped(asASCII: true))'" } ?? "the end of the document"
            throw fail(atEnd ? .unexpectedEnd : .malformed, "expected \(what), found \(found)")
        }
        let start = i
        i += 1
        while let c = peek(), XMLCharacters.isName(c) { i += 1 }
        return String(String.UnicodeScalarView(s[start..<i]))
    }

    // MARK: document

    mutating func document() throws(XMLReadError) -> XMLElementNode {
        if startsWith("<?xml"), let c = peek(5), XMLCharacters.isSpace(c) { try xmlDeclaration() }
        try misc()
        guard !atEnd else { throw fail(.noRootElement, "the document has no root element") }
        guard peek() == "<" else { throw fail(.malformed, "text before the root element") }
        let root = try element()
        try misc()
        guard atEnd else { throw fail(.trailingContent, "content after the root element") }
        return root
    }

    /// White space and comments between the declaration, the root and the end; anything else that is markup but
    /// not an element is refused here.
    mutating func misc() throws(XMLReadError) {
        while true {
            skipSpace()
            if startsWith("<!--") {
                try comment()
            } else if startsWith("<?") {
                throw processingInstruction()
            } else if startsWith("<!") {
                throw declaration()
            } else {
                return
            }
        }
    }

    /// `<?xml version="1.0" encoding="UTF-8" standalone="yes"?>`: version 1.x, UTF-8 only, in that order.
    mutating func xmlDeclaration() throws(XMLReadError) {
        let start = i
        i += 5
        var lastRank = -1
        while true {
            let spaced = skipSpace()
            if startsWith("?>") {
                i += 2
                break
            }
            guard !atEnd else { throw fail(.unexpectedEnd, "the XML declaration is not closed", at: start) }
            guard spaced else { throw fail(.malformed, "expected white space or '?>' in the XML declaration") }
            let at = i
            let key = try name("a pseudo-attribute of the XML declaration")
            skipSpace()
            guard peek() == "=" else { throw fail(.malformed, "expected '=' after \(key) in the XML declaration") }
            i += 1
            skipSpace()
            guard let quote = peek(), quote == "\"" || quote == "'" else { throw fail(.malformed, "expected a quoted value for \(key)") }
            i += 1
            var value = String.UnicodeScalarView()
            while let c = peek(), c != quote, c != "<", c != "?" {
                value.append(c)
                i += 1
            }
            guard peek() == quote else { throw fail(atEnd ? .unexpectedEnd : .malformed, "the value of \(key) in the XML declaration is not closed") }
            i += 1
            let v = String(value)
            guard let rank = ["version", "encoding", "standalone"].firstIndex(of: key), rank > lastRank else {
                throw fail(.malformed, "the XML declaration may hold version, encoding and standalone, once each and in that order", at: at)
            }
            if lastRank < 0 && rank != 0 { throw fail(.malformed, "the XML declaration must start with version", at: at) }
            lastRank = rank
            switch key {
            case "version":
                let digits = v.unicodeScalars.dropFirst(2)
                guard v.hasPrefix("1."), !digits.isEmpty, digits.allSatisfy({ ("0"..."9").contains($0) }) else {
                    throw fail(.malformed, "XML version \(Self.shown(v)) is not supported", at: at)
                }
            case "encoding":
                guard ["utf-8", "utf8"].contains(v.lowercased()) else { throw fail(.malformed, "only UTF-8 is accepted, not \(Self.shown(v))", at: at) }
            default:
                guard v == "yes" || v == "no" else { throw fail(.malformed, "standalone must be yes or no", at: at) }
            }
        }
        guard lastRank >= 0 else { throw fail(.malformed, "the XML declaration must give a version", at: start) }
    }

    /// The error for `<?...`: processing instructions are refused, and so is an XML declaration anywhere but first.
    func processingInstruction() -> XMLReadError {
        var target = String.UnicodeScalarView()
        var j = i + 2
        while j < s.count, XMLCharacters.isName(s[j]), target.count < 4 {
            target.append(s[j])
            j += 1
        }
        if String(target).lowercased() == "xml" {
            return fail(.processingInstruction, "an XML declaration is only allowed at the very start of the document")
        }
        return fail(.processingInstruction, "processing instructions are not accepted")
    }

    /// The error for `<!...` that is neither a comment nor CDATA.
    func declaration() -> XMLReadError {
        if startsWith("<!DOCTYPE") { return fail(.doctype, "document type declarations (<!DOCTYPE) are not accepted") }
        if startsWith("<!ENTITY") { return fail(.entityDeclaration, "entity declarations (<!ENTITY) are not accepted") }
        if startsWith("<!ELEMENT") || startsWith("<!ATTLIST") || startsWith("<!NOTATION") {
            return fail(.entityDeclaration, "markup declarations are not accepted")
        }
        if startsWith("<![CDATA[") { return fail(.malformed, "CDATA is only allowed inside an element") }
        return fail(.malformed, "'<!' must start a comment (<!--) or CDATA (<![CDATA[)")
    }

    // MARK: markup

    /// `<!-- ... -->`; `--` may not occur inside.
    mutating func comment() throws(XMLReadError) {
        let start = i
        i += 4
        while let c = peek() {
            if c == "-" && peek(1) == "-" {
                guard peek(2) == ">" else { throw fail(.malformed, "'--' is not allowed inside a comment") }
                i += 3
                return
            }
            i += 1
        }
        throw fail(.unexpectedEnd, "the comment is not closed", at: start)
    }

    /// `<![CDATA[ ... ]]>`: its characters, line ends normalized.
    mutating func cdata(into text: inout String.UnicodeScalarView) throws(XMLReadError) {
        let start = i
        i += 9
        while let c = peek() {
            if c == "]" && peek(1) == "]" && peek(2) == ">" {
                i += 3
                return
            }
            appendNormalizingLineEnd(c, into: &text)
        }
        throw fail(.unexpectedEnd, "the CDATA section is not closed", at: start)
    }

    /// Appends `c` (at `i`) and advances; `\r\n` and a lone `\r` become `\n`, as XML reads line ends.
    mutating func appendNormalizingLineEnd(_ c: Unicode.Scalar, into text: inout String.UnicodeScalarView) {
        i += 1
        if c == "\r" {
            if peek() == "\n" { i += 1 }
            text.append("\n")
        } else {
            text.append(c)
        }
    }

    /// `&lt;` `&gt;` `&amp;` `&apos;` `&quot;` `&#NN;` `&#xHH;`; any other entity is refused.
    mutating func reference() throws(XMLReadError) -> Unicode.Scalar {
        let start = i
        i += 1
        if peek() == "#" {
            i += 1
            let radix: UInt32 = peek() == "x" ? 16 : 10
            if radix == 16 { i += 1 }
            var value: UInt32 = 0
            var digits = 0
            while let c = peek(), c != ";" {
                guard let d = Self.digit(c, radix: radix) else {
                    throw fail(
                        .invalidCharacterReference, "a character reference holds only \(radix == 16 ? "hexadecimal " : "")digits and ends with ';'", at: start)
                }
                let (times, o1) = value.multipliedReportingOverflow(by: radix)
                let (sum, o2) = times.addingReportingOverflow(d)
                guard !o1, !o2, sum <= 0x10_FFFF else { throw fail(.invalidCharacterReference, "the character reference is out of range", at: start) }
                value = sum
                digits += 1
                i += 1
            }
            guard peek() == ";" else { throw fail(.unexpectedEnd, "the character reference is not closed", at: start) }
            i += 1
            guard digits > 0 else { throw fail(.invalidCharacterReference, "the character reference has no digits", at: start) }
            guard let scalar = Unicode.Scalar(value), XMLCharacters.isChar(scalar) else {
                throw fail(.invalidCharacterReference, "&#\(value); is not a character XML allows", at: start)
            }
            return scalar
        }
        guard let first = peek(), XMLCharacters.isNameStart(first) else {
            throw fail(.malformed, "'&' must start a reference; write &amp; for '&'", at: start)
        }
        let entity = try name("an entity name")
        guard peek() == ";" else { throw fail(atEnd ? .unexpectedEnd : .malformed, "the reference &\(Self.shown(entity)) is not closed with ';'", at: start) }
        i += 1
        switch entity {
        case "lt": return "<"
        case "gt": return ">"
        case "amp": return "&"
        case "apos": return "'"
        case "quot": return "\""
        default:
            throw fail(.unknownEntity, "unknown entity &\(Self.shown(entity)); (only &lt; &gt; &amp; &apos; &quot; are defined)", at: start)
        }
    }

    static func digit(_ c: Unicode.Scalar, radix: UInt32) -> UInt32? {
        switch c.value {
        case 0x30...0x39: return c.value - 0x30
        case 0x41...0x46 where radix == 16: return c.value - 0x41 + 10
        case 0x61...0x66 where radix == 16: return c.value - 0x61 + 10
        default: return nil
        }
    }

    /// A start tag at `i` (`<name attr="v">` or `<name/>`); says whether it was empty (`/>`).
    mutating func startTag() throws(XMLReadError) -> (XMLElementNode, empty: Bool) {
        i += 1
        let name = try name("an element name")
        var node = XMLElementNode(name: name)
        var names: Set<String> = []
        while true {
            let spaced = skipSpace()
            guard let c = peek() else { throw fail(.unexpectedEnd, "the document ends inside the start tag of <\(Self.shown(name))>") }
            if c == ">" {
                i += 1
                return (node, false)
            }
            if c == "/" {
                guard peek(1) == ">" else { throw fail(.malformed, "expected '>' after '/' in <\(Self.shown(name))>") }
                i += 2
                return (node, true)
            }
            guard spaced else { throw fail(.malformed, "expected white space, '>' or '/>' in the start tag of <\(Self.shown(name))>") }
            let at = i
            let attribute = try self.name("an attribute name")
            skipSpace()
            guard peek() == "=" else { throw fail(atEnd ? .unexpectedEnd : .malformed, "expected '=' after attribute \(Self.shown(attribute))") }
            i += 1
            skipSpace()
            let value = try attributeValue()
            guard names.insert(attribute).inserted else {
                throw fail(.duplicateAttribute, "attribute \(Self.shown(attribute)) appears twice on <\(Self.shown(name))>", at: at)
            }
            node.attributes.append(XMLAttribute(name: attribute, value: value))
        }
    }

    /// A quoted attribute value, references replaced and white space normalized to spaces.
    mutating func attributeValue() throws(XMLReadError) -> String {
        guard let quote = peek(), quote == "\"" || quote == "'" else { throw fail(atEnd ? .unexpectedEnd : .malformed, "expected a quoted attribute value") }
        let start = i
        i += 1
        var value = String.UnicodeScalarView()
        while let c = peek() {
            switch c {
            case quote:
                i += 1
                return String(value)
            case "<":
                throw fail(.malformed, "'<' is not allowed in an attribute value")
            case "&":
                value.append(try reference())
            case "\r":
                i += peek(1) == "\n" ? 2 : 1
                value.append(" ")
            case "\n", "\t":
                i += 1
                value.append(" ")
            default:
                i += 1
                value.append(c)
            }
        }
        throw fail(.unexpectedEnd, "the attribute value is not closed", at: start)
    }

    /// An end tag at `i` that must close `open`.
    mutating func endTag(closing open: String) throws(XMLReadError) {
        let start = i
        i += 2
        let name = try name("an element name in the end tag")
        skipSpace()
        guard peek() == ">" else { throw fail(atEnd ? .unexpectedEnd : .malformed, "expected '>' to end </\(Self.shown(name))>") }
        i += 1
        guard name == open else {
            throw fail(.mismatchedTag, "</\(Self.shown(name))> does not close <\(Self.shown(open))>", at: start)
        }
    }

    /// The root element and everything in it, read without recursion; at most `maxDepth` deep.
    mutating func element() throws(XMLReadError) -> XMLElementNode {
        let (root, empty) = try startTag()
        if empty { return root }
        var open = [root]
        var texts = [String.UnicodeScalarView()]
        while true {
            guard let c = peek() else {
                throw fail(.unexpectedEnd, "the document ends inside <\(Self.shown(open[open.count - 1].name))>")
            }
            let top = open.count - 1
            switch c {
            case "<":
                if startsWith("</") {
                    try endTag(closing: open[top].name)
                    var done = open.removeLast()
                    done.text = String(texts.removeLast())
                    if open.isEmpty { return done }
                    open[top - 1].children.append(done)
                } else if startsWith("<!--") {
                    try comment()
                } else if startsWith("<![CDATA[") {
                    try cdata(into: &texts[top])
                } else if startsWith("<?") {
                    throw processingInstruction()
                } else if startsWith("<!") {
                    throw declaration()
                } else {
                    guard open.count < maxDepth else { throw fail(.tooDeep, "elements are nested more than \(maxDepth) deep") }
                    let (child, empty) = try startTag()
                    if empty {
                        open[top].children.append(child)
                    } else {
                        open.append(child)
                        texts.append(String.UnicodeScalarView())
                    }
                }
            case "&":
                texts[top].append(try reference())
            case "]" where peek(1) == "]" && peek(2) == ">":
                throw fail(.malformed, "']]>' is not allowed in text")
            default:
                appendNormalizingLineEnd(c, into: &texts[top])
            }
        }
    }
}
