import CanopyCore
import CanopyServices
import CanopyTesting
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Testing

@testable import CanopyDataForest

/// One object, many views: an instance made through SCNet is the same workload to the native API and Data Forest.
@Suite("an SCNet instance through the native API and the Data Forest dialect")
struct CrossDialectTests {
    @Test("its state agrees in every view, running and stopped")
    func oneObject() async throws {
        try await withServer { server, client in
            let admin = server.adminToken
            #expect(
                try await client.json("/api/v1/users", .post, token: admin, body: ["user": "alice", "tenant": "lab", "password": "alice-password"]).0
                    == .created)
            var h: HTTPFields = [:]
            for (k, v) in [("user", "alice"), ("password", "alice-password"), ("orgId", TenantID.of("lab"))] { h[HTTPField.Name(k)!] = v }
            let signIn = try await client.execute(uri: "/ac/openapi/v2/tokens", method: .post, headers: h) { TestJSON.object($0.body) }
            let token = try #require((signIn["data"] as? [[String: Any]])?.last?["token"] as? String)
            var sh: HTTPFields = [.contentType: "application/json"]
            sh[HTTPField.Name("token")!] = token
            let body: [String: Any] = [
                "instanceServiceName": "both", "taskType": "ssh", "acceleratorType": "cpu", "version": "x", "imagePath": "x", "timeoutLimit": "01:00:00",
                "taskNumber": 1, "resourceGroup": "default", "useStartScript": false, "startScriptActionScope": "all", "cpuNumber": 1, "ramSize": 256,
                "gpuNumber": 0,
            ]
            let created = try await client.execute(uri: "/ai/openapi/v2/instance-service/task", method: .post, headers: sh, body: TestJSON.body(body)) {
                TestJSON.object($0.body)
            }
            let id = try #require(created["data"] as? String, "\(created)")
            // Alice's access key, for Data Forest.
            let aliceToken = try await client.json("/api/v1/tokens", .post, token: admin, body: ["user": "alice", "tenant": "lab"]).1["token"] as? String ?? ""
            let signer = try await client.newKey(token: aliceToken)

            func views() async throws -> (native: String, scnet: String, dataForest: String) {
                let native = try await client.json("/api/v1/workloads/\(id)", token: admin).1["phase"] as? String ?? ""
                let detail = try await client.execute(uri: "/ai/openapi/v2/instance-service/\(id)/detail", method: .get, headers: sh) {
                    TestJSON.object($0.body)
                }
                let scnet = (detail["data"] as? [String: Any])?["status"] as? String ?? ""
                let df = try await client.df("aiapps/getDetail", ["id": id], signer).1["state"] as? String ?? ""
                return (native, scnet, df)
            }
            _ = try await client.waitForPhase(id, token: admin, ["Running"])
            var v = try await views()
            #expect(v.native == "Running" && v.scnet == "Running" && v.dataForest == DataForestMapping.yarn(.running).state, "\(v)")
            let listed = try await client.df("aiapps/getList", [:], signer).1["contents"] as? [[String: Any]] ?? []
            #expect(listed.contains { $0["id"] as? String == id }, "Data Forest lists it among the account's apps")

            let stop = try await client.execute(uri: "/ai/openapi/v2/instance-service/task/actions/stop?ids=\(id)", method: .post, headers: sh) {
                TestJSON.object($0.body)
            }
            #expect(stop["code"] as? String == "0")
            _ = try await client.waitForPhase(id, token: admin, ["Stopped"], timeout: .seconds(20))
            v = try await views()
            #expect(v.native == "Stopped" && v.scnet == "Terminated" && v.dataForest == DataForestMapping.yarn(.stopped).state, "\(v)")
        }
    }
}
