/// A strict, small XML reader in pure Swift for request bodies from outside.
///
/// It reads UTF-8 bytes into a tree of elements, and refuses rather than guesses: besides malformed markup it refuses
/// processing instructions (other than one leading `<?xml ...?>` declaration), document type declarations, entity
/// declarations and references to any entity but the five predefined ones, character references to values XML cannot
/// carry, invalid UTF-8, and nesting deeper than `maxDepth`. Every refusal is an `XMLReadError` with its line and
/// column; nothing the input holds can make it trap. Attributes are parsed and checked (well-formedness, no
/// duplicates) and kept on the element. Names keep their namespace prefix as written; namespaces are not resolved.
public enum XMLReader {
    /// The deepest nesting of elements accepted by default (the root is depth 1).
    public static let defaultMaxDepth = 64

    /// Reads a document from its UTF-8 bytes; returns its root element.
    public static func read(_ bytes: some Collection<UInt8>, maxDepth: Int = defaultMaxDepth) throws(XMLReadError) -> XMLElementNode {
        var parser = try XMLScanner(scalars: decode(bytes), maxDepth: maxDepth)
        return try parser.document()
    }

    /// Decodes strict UTF-8 (no overlong forms, surrogates or truncated sequences) and checks every scalar is a
    /// character XML 1.0 allows.
    static func decode(_ bytes: some Collection<UInt8>) throws(XMLReadError) -> [Unicode.Scalar] {
        var scalars: [Unicode.Scalar] = []
        scalars.reserveCapacity(bytes.count)
        var iterator = bytes.makeIterator()
        var utf8 = Unicode.UTF8.ForwardParser()
        while true {
            switch utf8.parseScalar(from: &iterator) {
            case .valid(let encoded):
                let scalar = Unicode.UTF8.decode(encoded)
                guard XMLCharacters.isChar(scalar) else {
                    throw XMLScanner.error(.invalidCharacter, "character U+\(hex(scalar.value)) is not allowed in XML", scalars, at: scalars.count)
                }
                scalars.append(scalar)
            case .error:
                throw XMLScanner.error(.invalidUTF8, "the body is not valid UTF-8", scalars, at: scalars.count)
            case .emptyInput:
                // A byte order mark is allowed before the document and is not part of it.
                if scalars.first == "\u{FEFF}" { scalars.removeFirst() }
                return scalars
            }
        }
    }

    static func hex(_ value: UInt32) -> String {
        let digits = String(value, radix: 16, uppercase: true)
        return String(repeating: "0", count: max(0, 4 - digits.count)) + digits
    }
}

/// An element: its name as written, attributes in document order, child elements, and its character data (text,
/// CDATA and references, concatenated in document order; comments are dropped).
public struct XMLElementNode: Sendable, Hashable {
    /// The element's name, prefix included (`ns:name`).
    public var name: String
    /// Attributes in document order, values with references replaced.
    public var attributes: [XMLAttribute]
    /// Child elements in document order.
    public var children: [XMLElementNode]
    /// The element's own character data.
    public var text: String

    /// Creates an element.
    public init(name: String, attributes: [XMLAttribute] = [], children: [XMLElementNode] = [], text: String = "") {
        self.name = name
        self.attributes = attributes
        self.children = children
        self.text = text
    }
}

/// One attribute of an element.
public struct XMLAttribute: Sendable, Hashable {
    /// The attribute's name, prefix included.
    public var name: String
    /// Its value, references replaced.
    public var value: String

    /// Creates an attribute.
    public init(name: String, value: String) {
        self.name = name
        self.value = value
    }
}

/// Why a document was refused, and where (1-based line and column, counted in Unicode scalars).
public struct XMLReadError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The classes of refusal.
    public enum Kind: Sendable, Hashable {
        /// Bytes that are not UTF-8.
        case invalidUTF8
        /// A character XML 1.0 does not allow (control characters, U+FFFE, U+FFFF), or one out of place.
        case invalidCharacter
        /// A processing instruction, or an XML declaration that is not the document's first thing or not UTF-8 1.x.
        case processingInstruction
        /// `<!DOCTYPE`.
        case doctype
        /// `<!ENTITY` or another markup declaration.
        case entityDeclaration
        /// `&name;` for a name that is not one of the five predefined entities.
        case unknownEntity
        /// `&#...;` that is malformed or names a value XML cannot carry.
        case invalidCharacterReference
        /// An end tag that does not close the open element.
        case mismatchedTag
        /// The document ends inside markup or with elements open.
        case unexpectedEnd
        /// Something after the root element other than comments and white space.
        case trailingContent
        /// No root element.
        case noRootElement
        /// Nesting deeper than the limit.
        case tooDeep
        /// The same attribute twice on one element.
        case duplicateAttribute
        /// Any other malformed markup.
        case malformed
    }

    /// The class of refusal.
    public var kind: Kind
    /// What is wrong, without the position.
    public var reason: String
    /// 1-based line.
    public var line: Int
    /// 1-based column.
    public var column: Int

    /// Creates an error.
    public init(kind: Kind, reason: String, line: Int, column: Int) {
        self.kind = kind
        self.reason = reason
        self.line = line
        self.column = column
    }

    /// `REASON (line L, column C)`.
    public var description: String { "\(reason) (line \(line), column \(column))" }
}
