import Foundation

#if canImport(FoundationXML)
import FoundationXML
#endif

/// Data Forest speaks JSON and XML with the same field names: an XML body is a root element named after the
/// operation (`<SubmitAiAppRequest>`) whose children are the JSON object's fields. This converts between the two,
/// so every operation is decoded and encoded once, as JSON. XML has no types, so the conversion is told which
/// fields are arrays, numbers, booleans and free-form maps.
enum XMLBodies {
    /// Fields that are arrays even when they hold one element.
    static let arrays: Set<String> = ["input", "output", "exposeTcpPorts", "contents"]
    /// Fields that are numbers.
    static let numbers: Set<String> = ["cpuCount", "gpuCount", "memoryMb", "exposeTcpPorts", "elapsedMillis", "total", "pageNo", "pageSize"]
    /// Fields that are booleans.
    static let booleans: Set<String> = ["overwrite", "success", "availableName", "disabled"]
    /// Fields whose children are a map of names to strings.
    static let maps: Set<String> = ["env"]

    struct Element {
        var name: String
        var children: [Element] = []
        var text = ""
    }

    final class TreeBuilder: NSObject, XMLParserDelegate {
        var stack: [Element] = []
        var root: Element?
        var failure: String?

        func parser(_ parser: XMLParser, didStartElement name: String, namespaceURI: String?, qualifiedName: String?, attributes: [String: String] = [:]) {
            stack.append(Element(name: name))
            if stack.count > 64 {
                failure = "XML nested too deeply"
                parser.abortParsing()
            }
        }

        func parser(_ parser: XMLParser, foundCharacters string: String) {
            if !stack.isEmpty { stack[stack.count - 1].text += string }
        }

        func parser(_ parser: XMLParser, foundCDATA block: Data) {
            if !stack.isEmpty { stack[stack.count - 1].text += String(decoding: block, as: UTF8.self) }
        }

        func parser(_ parser: XMLParser, didEndElement name: String, namespaceURI: String?, qualifiedName: String?) {
            guard let done = stack.popLast() else { return }
            if stack.isEmpty { root = done } else { stack[stack.count - 1].children.append(done) }
        }

        func parser(_ parser: XMLParser, parseErrorOccurred error: any Error) {
            if failure == nil { failure = "malformed XML (line \(parser.lineNumber), column \(parser.columnNumber))" }
        }
    }

    /// Parses an XML body into the JSON object it stands for, encoded; returns the root element's name too.
    static func json(fromXML data: Data) throws -> (root: String, json: Data) {
        let (root, value) = try value(fromXML: data)
        return (root, try JSONEncoder().encode(value))
    }

    /// Parses an XML body into the JSON value it stands for; returns the root element's name too.
    static func value(fromXML data: Data) throws -> (root: String, value: JSONValue) {
        let parser = XMLParser(data: data)
        parser.shouldResolveExternalEntities = false
        let builder = TreeBuilder()
        parser.delegate = builder
        let ok = parser.parse()
        guard ok, builder.failure == nil, let root = builder.root else {
            throw DataForestError.badRequest(builder.failure ?? "request body is not well-formed XML")
        }
        return (root.name, value(of: root, as: nil))
    }

    static func scalar(_ text: String, name: String) -> JSONValue {
        let t = text.trimmingCharacters(in: .whitespacesAndNewlines)
        if numbers.contains(name), let n = Int64(t) { return .int(n) }
        if numbers.contains(name), let d = Double(t) { return .double(d) }
        if booleans.contains(name), t == "true" || t == "false" { return .bool(t == "true") }
        return .string(t)
    }

    static func value(of e: Element, as name: String?) -> JSONValue {
        if let name, maps.contains(name) {
            var map: [String: JSONValue] = [:]
            for c in e.children { map[c.name] = .string(c.text) }
            return .object(map)
        }
        if e.children.isEmpty {
            // An element with neither children nor text is an empty body at the root, and absent anywhere else
            // (`<data/>` and `<args/>` both mean "not given").
            if e.text.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty { return name == nil ? .object([:]) : .null }
            return scalar(e.text, name: name ?? e.name)
        }
        var object: [String: JSONValue] = [:]
        var order: [String] = []
        var grouped: [String: [Element]] = [:]
        for c in e.children {
            if grouped[c.name] == nil { order.append(c.name) }
            grouped[c.name, default: []].append(c)
        }
        for key in order {
            let items = grouped[key]!
            if arrays.contains(key) || items.count > 1 {
                object[key] = .array(items.map { value(of: $0, as: key) })
            } else {
                object[key] = value(of: items[0], as: key)
            }
        }
        return .object(object)
    }

    /// Writes a JSON body as XML under `root`.
    static func xml(fromJSON data: Data, root: String) -> Data {
        xml((try? JSONDecoder().decode(JSONValue.self, from: data)) ?? .object([:]), root: root)
    }

    /// Writes a value as XML under `root`.
    static func xml(_ value: JSONValue, root: String) -> Data {
        var out = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
        write(value, name: root, into: &out)
        return Data(out.utf8)
    }

    static func write(_ value: JSONValue, name: String, into out: inout String) {
        let tag = safeName(name)
        switch value {
        case .object(let dict):
            out += "<\(tag)>"
            for key in dict.keys.sorted() { write(dict[key]!, name: key, into: &out) }
            out += "</\(tag)>"
        case .array(let items):
            for item in items { write(item, name: name, into: &out) }
        case .null:
            break
        case .bool(let b): out += "<\(tag)>\(b)</\(tag)>"
        case .int(let n): out += "<\(tag)>\(n)</\(tag)>"
        case .double(let d): out += "<\(tag)>\(d)</\(tag)>"
        case .string(let s): out += "<\(tag)>\(escape(s))</\(tag)>"
        }
    }

    /// An element name for a map key: XML names cannot start with a digit or hold most punctuation.
    static func safeName(_ name: String) -> String {
        var s = String(name.unicodeScalars.map { c -> Character in
            CharacterSet.alphanumerics.contains(c) || c == "_" || c == "-" || c == "." ? Character(c) : "_"
        })
        if s.isEmpty || s.first!.isNumber || s.first == "-" || s.first == "." { s = "_" + s }
        return s
    }

    static func escape(_ s: String) -> String {
        var out = ""
        out.reserveCapacity(s.count)
        for c in s.unicodeScalars {
            switch c {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            default:
                // Characters XML 1.0 cannot carry at all are dropped.
                if c.value < 0x20 && c != "\n" && c != "\t" && c != "\r" { continue }
                out.unicodeScalars.append(c)
            }
        }
        return out
    }
}

/// Any JSON value, decoded without losing whether a value was a boolean, an integer or a string.
enum JSONValue: Codable, Equatable, Sendable {
    case null
    case bool(Bool)
    case int(Int64)
    case double(Double)
    case string(String)
    case array([JSONValue])
    case object([String: JSONValue])

    init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        if c.decodeNil() {
            self = .null
        } else if let b = try? c.decode(Bool.self) {
            self = .bool(b)
        } else if let i = try? c.decode(Int64.self) {
            self = .int(i)
        } else if let d = try? c.decode(Double.self) {
            self = .double(d)
        } else if let s = try? c.decode(String.self) {
            self = .string(s)
        } else if let a = try? c.decode([JSONValue].self) {
            self = .array(a)
        } else {
            self = .object(try c.decode([String: JSONValue].self))
        }
    }

    func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        switch self {
        case .null: try c.encodeNil()
        case .bool(let b): try c.encode(b)
        case .int(let i): try c.encode(i)
        case .double(let d): try c.encode(d)
        case .string(let s): try c.encode(s)
        case .array(let a): try c.encode(a)
        case .object(let o): try c.encode(o)
        }
    }

    /// The value at a dotted path such as `docker.image` or `data.input[0].hdfs`, for error messages.
    func at(_ path: String) -> JSONValue? {
        var current: JSONValue? = self
        for raw in path.split(separator: ".") {
            var part = Substring(raw)
            var indices: [Int] = []
            while let open = part.lastIndex(of: "["), part.hasSuffix("]"), let i = Int(part[part.index(after: open)..<part.index(before: part.endIndex)]) {
                indices.insert(i, at: 0)
                part = part[..<open]
            }
            if case .object(let o)? = current { current = o[String(part)] } else { return nil }
            for i in indices {
                if case .array(let a)? = current, a.indices.contains(i) { current = a[i] } else { return nil }
            }
        }
        return current
    }

    /// How the value reads in a message: strings bare, everything else as JSON.
    var display: String {
        switch self {
        case .string(let s): return s
        case .null: return ""
        case .bool(let b): return String(b)
        case .int(let i): return String(i)
        case .double(let d): return String(d)
        default: return String(decoding: (try? JSONEncoder().encode(self)) ?? Data(), as: UTF8.self)
        }
    }
}
