import CanopyCore
import CanopyHTTP
import CanopyXML
import Foundation
import Testing

@testable import CanopyDataForest

@Suite("JSON and XML bodies")
struct XMLBodyTests {
    @Test("seed 000's XML request decodes to the same request as its JSON")
    func submit() throws {
        let fromJSON = try JSONDecoder().decode(SubmitAiAppRequest.self, from: fixture("submit-request.json"))
        let (root, json) = try XMLBodies.json(fromXML: fixture("submit-request.xml"))
        #expect(root == "SubmitAiAppRequest")
        let fromXML = try JSONDecoder().decode(SubmitAiAppRequest.self, from: json)
        #expect(fromXML.aiWorkspaceId == fromJSON.aiWorkspaceId)
        #expect(fromXML.namePrefix == fromJSON.namePrefix)
        #expect(fromXML.queueName == fromJSON.queueName)
        #expect(fromXML.data == fromJSON.data)
        #expect(fromXML.docker == fromJSON.docker)
        #expect(fromXML.resource == fromJSON.resource)
    }

    @Test("seed 001's XML request decodes to the same request as its JSON")
    func createWorkspace() throws {
        let fromJSON = try JSONDecoder().decode(CreateAiWorkspaceRequest.self, from: fixture("create-workspace-request.json"))
        let (root, json) = try XMLBodies.json(fromXML: fixture("create-workspace-request.xml"))
        #expect(root == "CreateAiWorkspaceRequest")
        let fromXML = try JSONDecoder().decode(CreateAiWorkspaceRequest.self, from: json)
        #expect(fromXML.accountId == fromJSON.accountId)
        #expect(fromXML.name == fromJSON.name)
        #expect(fromXML.description == fromJSON.description)
        #expect(fromXML.configuration == fromJSON.configuration)
    }

    @Test("responses written as XML read back to the same values, types included")
    func roundTrip() throws {
        let golden = try fixture("submit-response.json")
        let xml = XMLBodies.xml(fromJSON: golden, root: "SubmitAiAppResponse")
        let text = String(decoding: xml, as: UTF8.self)
        #expect(text.hasPrefix("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<SubmitAiAppResponse>"))
        #expect(text.contains("<success>true</success>"))
        #expect(text.contains("<accountName>&lt;アカウント-名&gt;</accountName>"))
        let (root, back) = try XMLBodies.json(fromXML: xml)
        #expect(root == "SubmitAiAppResponse")
        #expect(try JSONDecoder().decode(JSONValue.self, from: back) == JSONDecoder().decode(JSONValue.self, from: golden))
    }

    @Test("what the dialect writes is XML its reader accepts, whatever names and text the values hold")
    func writerIsReadable() throws {
        let env: [String: JSONValue] = [
            "1a": .string("x"), "a:b": .string("y"), "\u{301}x": .string("z"), "a b": .string("\u{FFFF}\u{1}ok\r\n"), "": .string("<&>\"'"), "-": .int(1),
            "名前": .double(1.5),
        ]
        let xml = XMLBodies.xml(.object(["docker": .object(["env": .object(env)]), "items": .array([.bool(true), .null])]), root: "R")
        let root = try XMLReader.read(xml)
        let names = root.children.first { $0.name == "docker" }?.children.first?.children.map(\.name) ?? []
        #expect(Set(names) == ["_1a", "a_b", "_\u{301}x", "a_b", "_", "_-", "名前"])
        let text = String(decoding: xml, as: UTF8.self)
        #expect(text.contains("<a_b>ok&#13;\n</a_b>"))
        #expect(text.contains("<_>&lt;&amp;&gt;&quot;'</_>"))
    }

    @Test("malformed and hostile XML is refused with a 400 in the vendor's envelope, not a crash")
    func hostile() {
        let deep = String(repeating: "<a>", count: 200) + String(repeating: "</a>", count: 200)
        for bad in [
            "<a>", "<a></b>", "not xml", "<!DOCTYPE a [<!ENTITY e SYSTEM \"file:///etc/passwd\">]><a><b>&e;</b></a>", deep, "<Request><?pi?></Request>",
            "<?pi?><Request/>", "<a>&e;</a>", "<a/><b/>",
        ] {
            do throws(XMLBodyError) {
                _ = try XMLBodies.json(fromXML: Data(bad.utf8))
                Issue.record("accepted \(bad)")
            } catch {
                let answer = DataForestError.from(error)
                #expect(answer.status == .badRequest)
                #expect(answer.gatewayCode == nil)
                #expect(answer.message.hasPrefix("invalid request parameters. request body is not well-formed XML: "), "\(answer.message)")
                #expect(answer.message.contains("(line 1, column "), "\(answer.message)")
            }
        }
    }

    @Test("the golden XML fixtures read to exactly the JSON values of their JSON twins")
    func goldenValues() throws {
        for (xml, json) in [("submit-request.xml", "submit-request.json"), ("create-workspace-request.xml", "create-workspace-request.json")] {
            let fromXML = try XMLBodies.value(fromXML: fixture(xml)).value
            let fromJSON = try JSONDecoder().decode(JSONValue.self, from: fixture(json))
            #expect(fromXML == fromJSON, "\(xml)")
        }
    }

    @Test(
        "numbers JSON cannot carry are refused naming the field",
        arguments: ["1e400", "-1e400", "NaN", "nan", "inf", "-inf", "infinity", "1e999999"])
    func nonFinite(text: String) {
        let xml = "<CreateAiWorkspaceRequest><configuration><resource><cpuCount>\(text)</cpuCount></resource></configuration></CreateAiWorkspaceRequest>"
        #expect(throws: XMLBodyError(message: "must be a finite number", field: "configuration.resource.cpuCount", value: text)) {
            try XMLBodies.json(fromXML: Data(xml.utf8))
        }
        let ports = "<r><docker><exposeTcpPorts>80</exposeTcpPorts><exposeTcpPorts>\(text)</exposeTcpPorts></docker></r>"
        #expect(throws: XMLBodyError(message: "must be a finite number", field: "docker.exposeTcpPorts[1]", value: text)) {
            try XMLBodies.json(fromXML: Data(ports.utf8))
        }
    }

    @Test("integer fields holding numbers that are not Ints are refused naming the field")
    func integers() throws {
        for (json, field) in [
            (#"{"resource": {"cpuCount": 1e30}}"#, "resource.cpuCount"), (#"{"resource": {"memoryMb": 99999999999999999999}}"#, "resource.memoryMb"),
            (#"{"resource": {"gpuCount": 1.5}}"#, "resource.gpuCount"), (#"{"docker": {"exposeTcpPorts": [80, -1e19]}}"#, "docker.exposeTcpPorts[1]"),
        ] {
            let value = try JSONDecoder().decode(JSONValue.self, from: Data(json.utf8))
            do throws(DataForestError) {
                try BodyNumbers.check(value)
                Issue.record("accepted \(json)")
            } catch {
                #expect(error.status == .badRequest)
                #expect(error.message.hasPrefix("invalid request parameter (\(field), '"), "\(error.message)")
            }
        }
        try BodyNumbers.check(try JSONDecoder().decode(JSONValue.self, from: Data(#"{"resource": {"cpuCount": 2}, "description": 1.5}"#.utf8)))
        // A number beyond Double is named where JSON decoding meets it.
        #expect(throws: JSONValue.NumberOutOfRange.self) { try JSONDecoder().decode(JSONValue.self, from: Data(#"{"a": [{"b": 1e400}]}"#.utf8)) }
        do {
            _ = try JSONDecoder().decode(JSONValue.self, from: Data(#"{"a": [{"b": 1e400}]}"#.utf8))
        } catch let e as JSONValue.NumberOutOfRange {
            #expect(e.field == "a[0].b")
        }
    }
}
