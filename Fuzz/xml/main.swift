// Fuzzes the strict XML reader (CanopyXML) and the Data Forest conversion of XML bodies to JSON (XMLBodies,
// compiled in with JSONValue). Built by scripts/fuzz.sh; the input is the raw request body.
import CanopyXML
import Foundation

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = UnsafeBufferPointer(start: data, count: size)
    let root: XMLElementNode
    do {
        root = try XMLReader.read(bytes)
    } catch {
        // A refusal must say where, inside the document.
        guard error.line >= 1, error.column >= 1, error.line <= size + 1, error.column <= size + 1 else { fatalError("bad position: \(error)") }
        return 0
    }
    guard !root.name.isEmpty else { fatalError("an element without a name") }
    guard let (name, value) = try? XMLBodies.value(fromXML: Data(bytes)) else { return 0 }
    guard name == root.name else { fatalError("root \(name) is not \(root.name)") }
    // What was read encodes as JSON (no infinities), and what the dialect writes back is XML it reads again.
    guard let json = try? JSONEncoder().encode(value), (try? JSONDecoder().decode(JSONValue.self, from: json)) != nil else {
        fatalError("the value of an accepted body is not JSON")
    }
    let written = XMLBodies.xml(value, root: name)
    do {
        _ = try XMLReader.read(written)
    } catch {
        fatalError("the dialect wrote XML it cannot read: \(error)\n\(String(decoding: written, as: UTF8.self))")
    }
    return 0
}
