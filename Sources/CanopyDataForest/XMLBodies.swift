import CanopyXML
import Foundation

// JSONValue is CanopyHTTP's; the xml fuzz target compiles its source in beside this file instead.
#if canImport(CanopyHTTP)
    import CanopyHTTP
#endif

/// Data Forest speaks JSON and XML with the same field names: an XML body is a root element named after the
/// operation (`<SubmitAiAppRequest>`) whose children are the JSON object's fields. This converts between the two,
/// so every operation is decoded and encoded once, as JSON. XML has no types, so the conversion is told which
/// fields are arrays, numbers, booleans and free-form maps.
///
/// Bodies are read with `CanopyXML`'s strict reader, not Foundation's `XMLParser`: on Linux that one crashed on
/// processing instructions and on names that are not UTF-8, and it would read DTDs and entities that a request
/// body has no use for. Writing is string building and needs no XML library either.
enum XMLBodies {
    /// Fields that are arrays even when they hold one element.
    static let arrays: Set<String> = ["input", "output", "exposeTcpPorts", "contents"]
    /// Fields that are numbers.
    /// The request fields that hold integers (CPU and GPU counts, megabytes, ports), wherever they occur.
    static let integers: Set<String> = ["cpuCount", "gpuCount", "memoryMb", "exposeTcpPorts"]
    static let numbers: Set<String> = integers.union(["elapsedMillis", "total", "pageNo", "pageSize"])
    /// Fields that are booleans.
    static let booleans: Set<String> = ["overwrite", "success", "availableName", "disabled"]
    /// Fields whose children are a map of names to strings.
    static let maps: Set<String> = ["env"]

    /// Parses an XML body into the JSON object it stands for, encoded; returns the root element's name too.
    static func json(fromXML data: Data) throws(XMLBodyError) -> (root: String, json: Data) {
        let (root, value) = try value(fromXML: data)
        return (root, try encoded(value))
    }

    /// A value read from XML, as JSON. Every number in it is finite, so encoding cannot fail; if it did, it is still
    /// the body's fault.
    static func encoded(_ value: JSONValue) throws(XMLBodyError) -> Data {
        guard let json = try? JSONEncoder().encode(value) else { throw XMLBodyError(message: "the XML body cannot be read as JSON") }
        return json
    }

    /// Parses an XML body into the JSON value it stands for; returns the root element's name too.
    static func value(fromXML data: Data) throws(XMLBodyError) -> (root: String, value: JSONValue) {
        let root: XMLElementNode
        do {
            root = try XMLReader.read(data)
        } catch {
            throw XMLBodyError(message: "request body is not well-formed XML: \(error)")
        }
        return (root.name, try value(of: root, as: nil, path: ""))
    }

    /// A leaf's text as the JSON value its field holds. Numbers that are not finite (`1e400`, `NaN`, `inf`) are
    /// refused here, naming the field: JSON cannot carry them.
    static func scalar(_ text: String, name: String, path: String) throws(XMLBodyError) -> JSONValue {
        let t = text.trimmingCharacters(in: .whitespacesAndNewlines)
        if numbers.contains(name) {
            if let n = Int64(t) { return .int(n) }
            if let d = Double(t) {
                guard d.isFinite else { throw XMLBodyError(message: "must be a finite number", field: path, value: t) }
                // A whole number written as `1.0` or `1e3` is the integer, as JSON's decoding reads it.
                if let n = Int64(exactly: d) { return .int(n) }
                return .double(d)
            }
        }
        if booleans.contains(name), t == "true" || t == "false" { return .bool(t == "true") }
        return .string(t)
    }

    static func value(of e: XMLElementNode, as name: String?, path: String) throws(XMLBodyError) -> JSONValue {
        if let name, maps.contains(name) {
            var map: [String: JSONValue] = [:]
            for c in e.children { map[c.name] = .string(c.text) }
            return .object(map)
        }
        if e.children.isEmpty {
            // An element with neither children nor text is an empty body at the root, and absent anywhere else
            // (`<data/>` and `<args/>` both mean "not given").
            if e.text.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty { return name == nil ? .object([:]) : .null }
            return try scalar(e.text, name: name ?? e.name, path: path.isEmpty ? e.name : path)
        }
        var object: [String: JSONValue] = [:]
        var order: [String] = []
        var grouped: [String: [XMLElementNode]] = [:]
        for c in e.children {
            if grouped[c.name] == nil { order.append(c.name) }
            grouped[c.name, default: []].append(c)
        }
        for key in order {
            let items = grouped[key] ?? []
            let field = path.isEmpty ? key : "\(path).\(key)"
            if arrays.contains(key) || items.count > 1 {
                var values: [JSONValue] = []
                for (i, item) in items.enumerated() { values.append(try value(of: item, as: key, path: "\(field)[\(i)]")) }
                object[key] = .array(values)
            } else if let only = items.first {
                object[key] = try value(of: only, as: key, path: field)
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

    /// An element name for a map key: what XML does not allow in a name becomes `_` (colons too, so no key reads
    /// as a namespace prefix), and a name that cannot start as it is gets a leading `_`.
    static func safeName(_ name: String) -> String {
        var scalars = String.UnicodeScalarView()
        for c in name.unicodeScalars { scalars.append(XMLCharacters.isName(c) && c != ":" ? c : "_") }
        if let first = scalars.first, XMLCharacters.isNameStart(first) {
            return String(scalars)
        }
        return "_" + String(scalars)
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
            case "\r":
                // A literal CR would be read back as a line end; the reference keeps it.
                out += "&#13;"
            default:
                // Characters XML 1.0 cannot carry at all (controls, U+FFFE, U+FFFF) are dropped.
                if !XMLCharacters.isChar(c) { continue }
                out.unicodeScalars.append(c)
            }
        }
        return out
    }
}

/// Why an XML body cannot be read; the dialect answers it as a 400 in the vendor's envelope (`DataForestError`).
struct XMLBodyError: Error, Sendable, Equatable {
    /// What is wrong.
    var message: String
    /// The field it is about (`resource.cpuCount`), when it is one field's value.
    var field: String?
    /// That field's value as sent.
    var value: String?
}
