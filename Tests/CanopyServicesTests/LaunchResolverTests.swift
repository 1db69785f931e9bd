import CanopyCore
import Foundation
import Testing

@testable import CanopyServices

/// A data store that holds the paths it is given, under /store/TENANT.
struct PathsDataStore: DataStore {
    let paths: Set<String>
    func localPath(tenant: String, path: String) -> String { "/store/\(tenant)\(path)" }
    func entry(tenant: String, path: String) throws -> DataEntry? {
        paths.contains(path) ? DataEntry(path: path, isDirectory: true, size: 0, modifiedAt: Date()) : nil
    }
    func list(tenant: String, path: String) throws -> [DataEntry] { [] }
    func upload(tenant: String, path: String) throws -> any DataUpload { throw StagingError("read-only") }
    func delete(tenant: String, path: String) throws {}
}

@Suite("launch resolution: inputs and mounts to local paths")
struct LaunchResolverTests {
    let resolver = LaunchResolver(dataStore: PathsDataStore(paths: ["/user/a/data", "/user/a/in.txt"]))

    func workload(mounts: [Mount] = [], inputs: [DataInput] = []) -> Workload {
        Workload(
            id: "w", tenant: "acme", owner: "a", spec: WorkloadSpec(command: ["true"], data: DataStaging(inputs: inputs, outputs: []), mounts: mounts),
            createdAt: Date())
    }

    @Test(
        "a data: mount becomes the tenant's path in the store (normalized), a host: mount the host path",
        arguments: [
            (
                Mount(source: "data:/user/a/data", target: "/data", readOnly: true),
                ResolvedMount(hostPath: "/store/acme/user/a/data", target: "/data", readOnly: true, fromDataStore: true)
            ),
            (Mount(source: "data:/user//a/./data/", target: "/d"), ResolvedMount(hostPath: "/store/acme/user/a/data", target: "/d", readOnly: false, fromDataStore: true)),
            (
                Mount(source: "host:/datasets/imagenet", target: "/imagenet", readOnly: true),
                ResolvedMount(hostPath: "/datasets/imagenet", target: "/imagenet", readOnly: true)
            ),
        ])
    func mounts(mount: Mount, resolved: ResolvedMount) throws {
        #expect(try resolver.mounts(workload(mounts: [mount])) == [resolved])
    }

    @Test("a data: mount of a missing path fails the launch, naming it")
    func missingMount() {
        #expect(throws: StagingError("mount source data:/user/a/nope does not exist in the data store")) {
            try resolver.mounts(workload(mounts: [Mount(source: "data:/user/a/nope", target: "/x")]))
        }
        #expect(throws: StagingError.self) { try LaunchResolver(dataStore: nil).mounts(workload(mounts: [Mount(source: "data:/user/a/data", target: "/x")])) }
    }

    @Test("inputs resolve in the data store; a missing one names itself")
    func inputs() throws {
        #expect(
            try resolver.inputs(workload(inputs: [DataInput(source: "/user/a/in.txt", path: "in.txt")])) == [
                StagedInput(localSource: "/store/acme/user/a/in.txt", path: "in.txt")
            ])
        #expect(throws: StagingError("input /user/a/gone does not exist in the data store")) {
            try resolver.inputs(workload(inputs: [DataInput(source: "/user/a/gone", path: "x")]))
        }
    }
}
