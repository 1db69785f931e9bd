import CanopyApp
import CanopyCore
import CanopyTesting
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import NIOCore
import Testing

@testable import CanopyDataForest

/// A signing client for the dialect, over the application in process.
struct Signer: Sendable {
    var accessKey: String
    var secret: String

    func headers(_ method: String, _ uri: String, ts: Int64? = nil, xml: Bool = false) -> HTTPFields {
        let t = String(ts ?? Int64(Date().timeIntervalSince1970 * 1000))
        var h = HTTPFields()
        h[HTTPField.Name("x-ncp-apigw-timestamp")!] = t
        h[HTTPField.Name("x-ncp-iam-access-key")!] = accessKey
        h[HTTPField.Name("x-ncp-apigw-signature-v2")!] = SignatureV2.sign(method: method, uri: uri, timestamp: t, accessKey: accessKey, secret: secret)
        h[.contentType] = xml ? "application/xml" : "application/json"
        if xml { h[.accept] = "application/xml" }
        return h
    }
}

extension TestClientProtocol {
    /// Creates an access key through the native API with a bearer token.
    func newKey(token: String) async throws -> Signer {
        try await execute(uri: "/api/v1/keys", method: .post, headers: authHeaders(token), body: TestJSON.body(["description": "test"])) { r in
            let o = TestJSON.object(r.body)
            return Signer(accessKey: o["accessKey"] as? String ?? "", secret: o["secretKey"] as? String ?? "")
        }
    }

    func df(_ op: String, _ body: Any, _ s: Signer) async throws -> (HTTPResponse.Status, [String: Any]) {
        try await dfRaw(op, TestJSON.body(body), s)
    }

    func dfRaw(_ op: String, _ body: ByteBuffer, _ s: Signer, headers: HTTPFields? = nil) async throws -> (HTTPResponse.Status, [String: Any]) {
        let uri = "/api/v2/\(op)"
        return try await execute(uri: uri, method: .post, headers: headers ?? s.headers("POST", uri), body: body) { r in (r.status, TestJSON.object(r.body)) }
    }
}

/// A server with the dialect (image workloads run as processes unless `imageEngine` is given: then images resolve in
/// its catalog).
func withDataForest(
    imageEngine: (any ImageEngine)? = nil, _ test: @Sendable @escaping (CanopyServer, any TestClientProtocol, Signer, String) async throws -> Void
) async throws {
    var config = try testConfiguration()
    if imageEngine != nil { config.imagePolicy = nil }
    let server = try await buildApplication(config, imageEngine: imageEngine)
    try await server.application.test(.router) { client in
        let signer = try await client.newKey(token: server.adminToken)
        let accounts = try await client.df("accounts/getList", [:], signer).1
        let account = ((accounts["contents"] as? [[String: Any]])?.first?["id"] as? String) ?? ""
        try await test(server, client, signer, account)
    }
}

func goldenObject(_ name: String, replacing: [String: String] = [:]) throws -> [String: Any] {
    var text = String(decoding: try fixture(name), as: UTF8.self)
    for (k, v) in replacing { text = text.replacingOccurrences(of: k, with: v) }
    return try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any] ?? [:]
}

@Suite("Data Forest dialect through the application")
struct DataForestAPITests {
    @Test("seed 001: the example body with its bad image gets the documented error, in JSON and in XML")
    func createWorkspaceGolden() async throws {
        try await withDataForest { _, client, signer, account in
            let body = try goldenObject("create-workspace-request.json", replacing: ["6COytUeFj7b8eOhq2L5zL": account])
            let (status, error) = try await client.df("aiworkspaces/create", body, signer)
            #expect(status == .badRequest)
            let golden = try goldenObject("create-workspace-bad-image-response.json")
            #expect(error["message"] as? String == golden["message"] as? String)
            #expect(error["success"] as? Bool == false)
            #expect(Set(error.keys) == Set(golden.keys))

            var xml = String(decoding: try fixture("create-workspace-request.xml"), as: UTF8.self).replacingOccurrences(
                of: "6COytUeFj7b8eOhq2L5zL", with: account)
            let uri = "/api/v2/aiworkspaces/create"
            try await client.execute(uri: uri, method: .post, headers: signer.headers("POST", uri, xml: true), body: ByteBuffer(string: xml)) { r in
                #expect(r.status == .badRequest)
                let text = String(buffer: r.body)
                #expect(text.contains("<ErrorResponse>"))
                #expect(text.contains("<success>false</success>"))
                #expect(text.contains("'tensorflow/r2.3.1-py3'). &quot;^(dataforest/)?([a-z0-9._-]{1,30}):([a-z0-9._-]{1,20})$&quot;と一致する必要があります"))
            }

            // With a valid image the same body creates the workspace; the answer has the documented fields.
            xml = xml.replacingOccurrences(of: "tensorflow/r2.3.1-py3", with: "tensorflow:r2.3.1-py3")
            try await client.execute(uri: uri, method: .post, headers: signer.headers("POST", uri, xml: true), body: ByteBuffer(string: xml)) { r in
                #expect(r.status == .ok)
                let text = String(buffer: r.body)
                #expect(text.hasPrefix("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<CreateAiWorkspaceResponse>"))
                #expect(text.contains("<success>true</success>"))
            }
            let list = try await client.df("aiworkspaces/getList", ["search": ["accountId": account]], signer).1
            let contents = list["contents"] as? [[String: Any]] ?? []
            #expect(contents.map { $0["name"] as? String } == ["api-test"])
            #expect(
                Set(contents.first.map { Array($0.keys) } ?? []).isSuperset(of: [
                    "id", "name", "accountName", "description", "imageVersion", "disabled", "createdAt", "modifiedAt",
                ]))
        }
    }

    @Test("seed 000: a submission answers with the documented fields, ACCEPTED, UNDEFINED and the zero finishedAt")
    func submitGolden() async throws {
        try await withDataForest { server, client, signer, account in
            var config = try goldenObject(
                "create-workspace-request.json", replacing: ["6COytUeFj7b8eOhq2L5zL": account, "tensorflow/r2.3.1-py3": "tensorflow:r2.3.1-py3"])
            config["configuration"] = ["docker": ["command": "true", "image": "tensorflow:r2.3.1-py3"]]
            let ws = try await client.df("aiworkspaces/create", config, signer).1["id"] as? String ?? ""
            var body = try goldenObject("submit-request.json", replacing: ["6ZKSGoSJMMwctK257nxgiL": ws])
            body["data"] = [:]
            let (status, answer) = try await client.df("aiapps/submit", body, signer)
            #expect(status == .ok)
            let golden = try goldenObject("submit-response.json")
            #expect(Set(answer.keys) == Set(golden.keys).union(["message"]))
            #expect(answer["state"] as? String == "ACCEPTED")
            #expect(answer["finalStatus"] as? String == "UNDEFINED")
            #expect(answer["finishedAt"] as? String == "1970-01-01T09:00:00+09:00")
            #expect(answer["queueName"] as? String == "gpu")
            let name = answer["name"] as? String ?? ""
            #expect(try Regex("^\\*{4}-[a-z0-9]{4}-[a-z0-9]{4}$").wholeMatch(in: name) != nil)
            // One object, many views: the app is a Canopy workload in the gpu queue, running the shell command line.
            let id = answer["id"] as? String ?? ""
            let w = try await server.workloads.get(id, as: Principal(user: "admin", tenant: "default", role: .admin))
            #expect(w.spec.queue == "gpu")
            #expect(w.spec.command == ["/bin/sh", "-c", "echo run string"])
            #expect(w.spec.env == ["additionalProp1": "string", "additionalProp2": "string", "additionalProp3": "string"])
            #expect(w.spec.workdir == "/root/")
            #expect(w.spec.image == "tensorflow:r2.3.1-py3")
            #expect(w.spec.resources == Resources(cpuMillis: 1000, memoryMiB: 1024, gpus: 1, gpuModel: "T4"))
            // The vendor's fields live in the dialect's extension, not the user's labels; the workspace finds its apps by it.
            #expect(w.spec.labels.isEmpty && w.extensions?["dataforest"]?["workspace"] == ws && w.extensions?["dataforest"]?["queue"] == "gpu")
            let listed = try await client.df("aiapps/getList", ["search": ["aiWorkspaceId": ws]], signer).1
            #expect(listed["total"] as? Int == 1 && (listed["contents"] as? [[String: Any]])?.first?["workspaceName"] as? String == config["name"] as? String)
            #expect(try await client.df("aiapps/getList", ["search": ["aiWorkspaceId": "NoSuchWorkspace"]], signer).1["total"] as? Int == 0)
            var detail: [String: Any] = [:]
            _ = try await eventually {
                detail = try await client.df("aiapps/getDetail", ["id": id], signer).1
                return detail["state"] as? String == "FINISHED"
            }
            #expect(detail["finalStatus"] as? String == "SUCCEEDED")
            let containers = detail["containers"] as? [String: [String: Any]] ?? [:]
            #expect(containers.count == 1)
            let c = containers.values.first ?? [:]
            #expect(Set(c.keys) == ["component", "containerId", "cpuCount", "memoryMb", "createdAt", "dockerImage", "logUrl", "status"])
            let logURL = c["logUrl"] as? String ?? ""
            let path = String(logURL[try #require(logURL.range(of: "/api/v2/"))!.lowerBound...])
            try await client.execute(uri: path, method: .get, headers: signer.headers("GET", path)) { r in
                #expect(r.status == .ok)
                #expect(String(buffer: r.body) == "run string\n")
            }
            try await client.execute(uri: path, method: .get) { r in #expect(r.status == .unauthorized) }
        }
    }

    @Test("authentication answers as the API gateway: missing headers, stale timestamps, unknown and revoked keys")
    func authentication() async throws {
        try await withDataForest { server, client, signer, _ in
            let uri = "/api/v2/accounts/getList"
            let stale = Int64(Date().timeIntervalSince1970 * 1000) - 301_000
            for headers in [
                HTTPFields([HTTPField(name: .contentType, value: "application/json")]), signer.headers("POST", uri, ts: stale),
                Signer(accessKey: "NOPE", secret: "x").headers("POST", uri), Signer(accessKey: signer.accessKey, secret: "wrong").headers("POST", uri),
                signer.headers("POST", "/api/v2/accounts/getDetail"),
            ] {
                let (status, body) = try await client.dfRaw("accounts/getList", ByteBuffer(string: "{}"), signer, headers: headers)
                #expect(status == .unauthorized)
                #expect((body["error"] as? [String: Any])?["errorCode"] as? String == "200")
                #expect((body["error"] as? [String: Any])?["message"] as? String == "Authentication Failed")
            }
            // Revoking a key shuts it out at once.
            let keys = try await client.execute(uri: "/api/v1/keys", method: .get, headers: authHeaders(server.adminToken)) { TestJSON.object($0.body) }
            let id = ((keys["items"] as? [[String: Any]])?.first { $0["accessKey"] as? String == signer.accessKey }?["id"] as? String) ?? ""
            try await client.execute(uri: "/api/v1/keys/\(id)", method: .delete, headers: authHeaders(server.adminToken)) { #expect($0.status == .noContent) }
            #expect(try await client.df("accounts/getList", [:], signer).0 == .unauthorized)
        }
    }

    @Test("bad input gets the vendor's 4xx shapes, never a 5xx; another tenant's workspace is no such element")
    func badInput() async throws {
        try await withDataForest { server, client, signer, account in
            let ws =
                try await client.df(
                    "aiworkspaces/create", ["accountId": account, "name": "mine", "configuration": ["docker": ["command": "true", "image": "tf:1"]]], signer
                ).1["id"] as? String ?? ""
            let cases: [(String, Any, HTTPResponse.Status, String)] = [
                (
                    "aiworkspaces/create", ["accountId": account, "name": "Bad_Name", "configuration": [:]], .badRequest,
                    "invalid request parameter (name, 'Bad_Name')"
                ),
                (
                    "aiworkspaces/create", ["accountId": account, "name": "ok", "description": String(repeating: "d", count: 256), "configuration": [:]],
                    .badRequest,
                    "invalid request parameter (description,"
                ),
                ("aiworkspaces/create", ["accountId": account, "name": "ok"], .badRequest, "invalid request parameter (configuration, '')"),
                ("aiworkspaces/create", ["accountId": "NoSuchAccount", "name": "ok", "configuration": [:]], .notFound, "no such element"),
                ("aiworkspaces/create", ["accountId": account, "name": "mine", "configuration": [:]], .badRequest, "invalid request parameter (name, 'mine')"),
                ("aiworkspaces/create", ["accountId": account, "name": 7, "configuration": [:]], .badRequest, "invalid request parameter (name, '7')"),
                (
                    "aiapps/submit", ["aiWorkspaceId": ws, "namePrefix": "ok", "resource": ["gpuCount": "two"]], .badRequest,
                    "invalid request parameter (resource.gpuCount, 'two')"
                ),
                (
                    "aiapps/submit", ["aiWorkspaceId": ws, "namePrefix": "ok", "resource": ["cpuCount": 64]], .badRequest,
                    "invalid request parameter (resource.cpuCount, '64')"
                ),
                (
                    "aiapps/submit", ["aiWorkspaceId": ws, "namePrefix": "ok", "resource": ["gpuCount": 1, "gpuModel": "A100"]], .badRequest,
                    "invalid request parameter (resource.gpuModel, 'A100')"
                ),
                (
                    "aiapps/submit", ["aiWorkspaceId": ws, "namePrefix": "ok", "docker": ["image": "Bad"]], .badRequest,
                    "invalid request parameter (docker.image, 'Bad')"
                ),
                (
                    "aiapps/submit", ["aiWorkspaceId": ws, "namePrefix": "ok", "data": ["input": [["hdfs": "/../etc", "path": "x"]]]], .badRequest,
                    "invalid request parameter (data.input[0].hdfs, '/../etc')"
                ),
                (
                    "aiapps/submit", ["aiWorkspaceId": ws, "namePrefix": "ok", "data": ["output": [["hdfs": "/o", "path": "../../x"]]]], .badRequest,
                    "invalid request parameter (data.output[0].path, '../../x')"
                ),
                ("aiapps/submit", ["aiWorkspaceId": ws, "namePrefix": "ok", "queueName": "Not A Queue"], .badRequest, "invalid request parameter (queueName,"),
                ("aiapps/submit", ["aiWorkspaceId": "NoSuchWorkspace", "namePrefix": "ok"], .notFound, "no such element"),
                ("aiapps/getDetail", ["id": String(repeating: "x", count: 23)], .badRequest, "invalid request parameter (id,"),
                ("aiapps/kill", [:], .badRequest, "invalid request parameter (id, '')"),
                ("aiapps/nothing", [:], .notFound, "no such element"),
            ]
            for (op, body, status, prefix) in cases {
                let (s, answer) = try await client.df(op, body, signer)
                #expect(s == status, "\(op) \(body)")
                #expect((answer["message"] as? String ?? "").hasPrefix(prefix), "\(op): \(answer)")
                #expect(answer["success"] as? Bool == false)
            }
            for raw in ["{not json", "[1,2]", "<SubmitAiAppRequest><a>"] {
                let (s, answer) = try await client.dfRaw("aiapps/submit", ByteBuffer(string: raw), signer)
                #expect(s == .badRequest, "\(raw)")
                #expect(answer["success"] as? Bool == false)
            }
            let huge = ByteBuffer(string: "{\"namePrefix\": \"" + String(repeating: "a", count: 2 << 20) + "\"}")
            let tooLarge = try await client.dfRaw("aiapps/submit", huge, signer)
            #expect(tooLarge.0 == .contentTooLarge, "\(tooLarge)")

            // Another tenant's key sees the workspace as missing, and its own account only.
            let other = try await client.execute(
                uri: "/api/v1/tokens", method: .post, headers: authHeaders(server.adminToken), body: TestJSON.body(["user": "bob", "tenant": "other"])
            ) { TestJSON.object($0.body)["token"] as? String ?? "" }
            let bob = try await client.newKey(token: other)
            let (s, a) = try await client.df("aiworkspaces/getDetail", ["id": ws], bob)
            #expect(s == .notFound && a["message"] as? String == "no such element")
            #expect(try await client.df("aiapps/submit", ["aiWorkspaceId": ws, "namePrefix": "ok"], bob).0 == .notFound)
            #expect(try await client.df("aiworkspaces/getList", ["search": ["accountId": account]], bob).0 == .notFound)
            let mine = try await client.df("accounts/getList", [:], bob).1
            #expect((mine["contents"] as? [[String: Any]])?.map { $0["name"] as? String } == ["other"])
        }
    }

    @Test("a missing input fails the app with a reason; configuration history and name checks")
    func stagingAndConfiguration() async throws {
        try await withDataForest { _, client, signer, account in
            let ws =
                try await client.df(
                    "aiworkspaces/create",
                    ["accountId": account, "name": "cfg", "configuration": ["docker": ["command": "true", "image": "tf:1"], "queueName": "batch"]],
                    signer
                ).1["id"] as? String ?? ""
            #expect(try await client.df("aiworkspaces/checkAvailableName", ["accountId": account, "name": "cfg"], signer).1["availableName"] as? Bool == false)
            let set = try await client.df(
                "aiworkspaces/setConfiguration", ["id": ws, "configuration": ["docker": ["command": "exit 3", "image": "tf:2"], "queueName": "batch"]], signer)
            #expect(set.0 == .ok)
            let list = try await client.df("aiworkspaces/getConfigurationList", ["id": ws], signer).1
            #expect(list["total"] as? Int == 2)
            #expect(
                ((list["contents"] as? [[String: Any]])?.first?["configuration"] as? [String: Any]).flatMap {
                    ($0["docker"] as? [String: Any])?["image"] as? String
                } == "tf:2")

            // The workspace's configuration is the default: exit 3 in queue "batch", created on first use.
            let app = try await client.df("aiapps/submit", ["aiWorkspaceId": ws, "namePrefix": "cf"], signer).1
            #expect(app["queueName"] as? String == "batch")
            var d: [String: Any] = [:]
            _ = try await eventually {
                d = try await client.df("aiapps/getDetail", ["id": app["id"] as? String ?? ""], signer).1
                return d["state"] as? String == "FAILED"
            }
            #expect(d["finalStatus"] as? String == "FAILED")

            let missing = try await client.df(
                "aiapps/submit",
                ["aiWorkspaceId": ws, "namePrefix": "in", "docker": ["command": "true"], "data": ["input": [["hdfs": "/user/none", "path": "x"]]]], signer
            ).1
            _ = try await eventually {
                d = try await client.df("aiapps/getDetail", ["id": missing["id"] as? String ?? ""], signer).1
                return d["state"] as? String == "FAILED"
            }
            #expect((d["diagnostics"] as? String ?? "").contains("/user/none does not exist"))
        }
    }
}
