import CanopyCore
import CanopyTesting
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import NIOCore
import Testing

@testable import CanopyDataForest

/// The attacker's probe, replayed through the application: each finding answers a 4xx in the vendor's envelope,
/// and the server is still there to answer the next request.
@Suite("Data Forest hostile input through the application")
struct HostileInputTests {
    /// Posts raw bytes with the signer's headers; the content type and accept are XML when `xml`.
    func post(_ client: any TestClientProtocol, _ op: String, _ bytes: [UInt8], _ s: Signer, xml: Bool = true, acceptXML: Bool = false)
        async throws -> (HTTPResponse.Status, String)
    {
        let uri = "/api/v2/\(op)"
        var h = s.headers("POST", uri)
        if xml { h[.contentType] = "application/xml" }
        h[.accept] = acceptXML ? "application/xml" : "application/json"
        return try await client.execute(uri: uri, method: .post, headers: h, body: ByteBuffer(bytes: bytes)) { r in (r.status, String(buffer: r.body)) }
    }

    func envelope(_ text: String) -> [String: Any] { TestJSON.object(ByteBuffer(string: text)) }

    @Test("finding 1: timestamps at the ends of Int64 (and beyond) are the gateway's 401, without credentials")
    func timestampOverflow() async throws {
        try await withDataForest { _, client, signer, _ in
            let uri = "/api/v2/accounts/getList"
            let strangers = Signer(accessKey: "ANYKEY", secret: "anything")
            for ts in ["-9223372036854775808", "9223372036854775807", "-9223372036854775807", "99999999999999999999", "-0", "1e3", ""] {
                for s in [strangers, signer] {
                    var h = s.headers("POST", uri)
                    h[HTTPField.Name("x-ncp-apigw-timestamp")!] = ts
                    let (status, body) = try await client.dfRaw("accounts/getList", ByteBuffer(string: "{}"), s, headers: h)
                    #expect(status == .unauthorized, "\(ts)")
                    let error = body["error"] as? [String: Any]
                    #expect(error?["errorCode"] as? String == "200")
                    #expect(error?["message"] as? String == "Authentication Failed")
                }
            }
            // Signed over the extreme timestamp itself: still outside the window.
            let (status, _) = try await client.dfRaw("accounts/getList", ByteBuffer(string: "{}"), signer, headers: signer.headers("POST", uri, ts: .min))
            #expect(status == .unauthorized)
            // And the server still answers.
            #expect(try await client.df("accounts/getList", [:], signer).0 == .ok)
        }
    }

    @Test("finding 2: processing instructions, DTDs, entities and bytes that are not UTF-8 are a 400 in the vendor's envelope")
    func hostileXML() async throws {
        try await withDataForest { _, client, signer, _ in
            var bodies: [[UInt8]] = [
                "<Request><?pi?></Request>", "<?pi?><Request/>", "<Request/><?pi?>",
                "<!DOCTYPE a [<!ENTITY e SYSTEM \"file:///etc/passwd\">]><a><b>&e;</b></a>",
                "<a>&e;</a>", "<a>", "<a></b>", "not xml", "<a>&#0;</a>", "<a/><b/>",
                String(repeating: "<a>", count: 65) + String(repeating: "</a>", count: 65),
            ].map { Array($0.utf8) }
            bodies.append([0x3C, 0x52, 0xFF, 0x3E, 0x3C, 0x2F, 0x52, 0xFF, 0x3E])  // <R\xFF></R\xFF>: an element name
            bodies.append([0x3C, 0x52, 0x20, 0xC3, 0x28, 0x3D, 0x22, 0x31, 0x22, 0x2F, 0x3E])  // <R \xC3(="1"/>: an attribute name
            bodies.append([0x3C, 0x52, 0x3E, 0xED, 0xA0, 0x80, 0x3C, 0x2F, 0x52, 0x3E])  // a surrogate in text
            for body in bodies {
                let (status, text) = try await post(client, "aiapps/submit", body, signer)
                #expect(status == .badRequest, "\(body)")
                let e = envelope(text)
                #expect(e["success"] as? Bool == false)
                #expect((e["message"] as? String ?? "").hasPrefix("invalid request parameters. request body is not well-formed XML: "), "\(text)")
            }
            // In XML when asked for XML.
            let (status, text) = try await post(client, "aiapps/submit", Array("<Request><?pi?></Request>".utf8), signer, acceptXML: true)
            #expect(status == .badRequest)
            #expect(text.contains("<ErrorResponse>") && text.contains("<success>false</success>"))
            #expect(text.contains("processing instructions are not accepted (line 1, column 10)"), "\(text)")
            #expect(try await client.df("accounts/getList", [:], signer).0 == .ok)
        }
    }

    @Test("finding 2: byte-level mutations of the golden XML bodies never get a 5xx")
    func mutatedXML() async throws {
        try await withDataForest { _, client, signer, account in
            let ws =
                try await client.df(
                    "aiworkspaces/create", ["accountId": account, "name": "fuzz", "configuration": ["docker": ["command": "true", "image": "tf:1"]]], signer
                ).1["id"] as? String ?? ""
            let seeds = [
                (
                    "aiworkspaces/create",
                    Array(
                        String(decoding: try fixture("create-workspace-request.xml"), as: UTF8.self).replacingOccurrences(
                            of: "6COytUeFj7b8eOhq2L5zL", with: account
                        ).utf8)
                ),
                (
                    "aiapps/submit",
                    // An app a mutation lets through runs `true`, not the fixture's command.
                    Array(
                        String(decoding: try fixture("submit-request.xml"), as: UTF8.self).replacingOccurrences(of: "6ZKSGoSJMMwctK257nxgiL", with: ws)
                            .replacingOccurrences(of: "<command>echo run</command>", with: "<command>true</command>")
                            .replacingOccurrences(of: "<args>string</args>", with: "<args></args>").utf8)
                ),
            ]
            var rng = SplitMix64(seed: 145)
            let interesting: [UInt8] = [0x00, 0x3C, 0x3E, 0x3F, 0x21, 0x26, 0x2F, 0x22, 0x80, 0xC3, 0xED, 0xFF, 0x5B, 0x5D]
            var answered: [Int: Int] = [:]
            for n in 0..<300 {
                let (op, seed) = seeds[n % seeds.count]
                let bytes = rng.mutate(seed, interesting: interesting, insert: Array("<?pi?>".utf8))
                let (status, text) = try await post(client, op, bytes, signer)
                answered[status.code / 100 * 100, default: 0] += 1
                #expect(status.code < 500, "\(String(decoding: bytes, as: UTF8.self)) -> \(status) \(text)")
            }
            #expect(answered[400, default: 0] > 0)
            #expect(try await client.df("accounts/getList", [:], signer).0 == .ok)
        }
    }

    @Test("deeply nested JSON bodies are answered, not a stack overflow")
    func deepJSON() async throws {
        try await withDataForest { _, client, signer, _ in
            for depth in [100, 511, 600, 5000] {
                for (open, close) in [("{\"a\":", "}"), ("[", "]")] {
                    let body = String(repeating: open, count: depth) + "1" + String(repeating: close, count: depth)
                    let (status, _) = try await post(client, "aiapps/getDetail", Array(body.utf8), signer, xml: false)
                    #expect(status.code >= 400 && status.code < 500, "\(depth) \(open)")
                }
            }
            #expect(try await client.df("accounts/getList", [:], signer).0 == .ok)
        }
    }

    @Test("finding 3: XML numbers JSON cannot carry are a 400 naming the field", arguments: ["1e400", "NaN", "inf", "-inf"])
    func nonFiniteXML(number: String) async throws {
        try await withDataForest { _, client, signer, account in
            let xml = String(decoding: try fixture("create-workspace-request.xml"), as: UTF8.self)
                .replacingOccurrences(of: "6COytUeFj7b8eOhq2L5zL", with: account)
                .replacingOccurrences(of: "<cpuCount>1</cpuCount>", with: "<cpuCount>\(number)</cpuCount>")
            let (status, text) = try await post(client, "aiworkspaces/create", Array(xml.utf8), signer, acceptXML: true)
            #expect(status == .badRequest)
            #expect(
                text.contains("<message>invalid request parameter (configuration.resource.cpuCount, '\(number)'). must be a finite number</message>"), "\(text)"
            )
            #expect(text.contains("<success>false</success>"))
        }
    }

    @Test(
        "finding 3: JSON integers that overflow are a 400 naming the field",
        arguments: [
            ("1e30", "is out of range"), ("99999999999999999999", "is out of range"), ("-99999999999999999999", "is out of range"),
            ("1.5", "must be an integer"),
            ("1e400", "must be a number within range"), ("-1e400", "must be a number within range"),
        ])
    func overflowingJSON(number: String, why: String) async throws {
        try await withDataForest { _, client, signer, account in
            for field in ["cpuCount", "gpuCount", "memoryMb"] {
                let json = #"{"accountId": "\#(account)", "name": "big", "configuration": {"resource": {"\#(field)": \#(number)}}}"#
                let (status, text) = try await post(client, "aiworkspaces/create", Array(json.utf8), signer, xml: false)
                #expect(status == .badRequest, "\(json)")
                let message = envelope(text)["message"] as? String ?? ""
                #expect(message.hasPrefix("invalid request parameter (configuration.resource.\(field), '"), "\(message)")
                #expect(message.hasSuffix(why), "\(message)")
            }
            let ports = #"{"accountId": "\#(account)", "name": "big", "configuration": {"docker": {"exposeTcpPorts": [80, \#(number)]}}}"#
            let (status, text) = try await post(client, "aiworkspaces/create", Array(ports.utf8), signer, xml: false)
            #expect(status == .badRequest)
            #expect((envelope(text)["message"] as? String ?? "").hasPrefix("invalid request parameter (configuration.docker.exposeTcpPorts[1], '"), "\(text)")
        }
    }

    @Test("finding 3: the same numbers in an XML body are a 400 naming the field too")
    func overflowingXMLIntegers() async throws {
        try await withDataForest { _, client, signer, account in
            for number in ["99999999999999999999", "1e30", "1.5", "-9223372036854775809"] {
                let xml =
                    "<CreateAiWorkspaceRequest><accountId>\(account)</accountId><name>big</name>"
                    + "<configuration><resource><memoryMb>\(number)</memoryMb></resource></configuration></CreateAiWorkspaceRequest>"
                let (status, text) = try await post(client, "aiworkspaces/create", Array(xml.utf8), signer)
                #expect(status == .badRequest)
                #expect((envelope(text)["message"] as? String ?? "").hasPrefix("invalid request parameter (configuration.resource.memoryMb, '"), "\(text)")
            }
            // Int64's extremes are integers, refused by the range check that follows.
            let xml =
                "<CreateAiWorkspaceRequest><accountId>\(account)</accountId><name>big</name>"
                + "<configuration><resource><cpuCount>-9223372036854775808</cpuCount></resource></configuration></CreateAiWorkspaceRequest>"
            let (status, text) = try await post(client, "aiworkspaces/create", Array(xml.utf8), signer)
            #expect(status == .badRequest)
            #expect((envelope(text)["message"] as? String ?? "").contains("must be between 1 and 1024"), "\(text)")
        }
    }
}
