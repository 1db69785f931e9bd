import CanopyCore
import Foundation

/// Resolves what a workload names in the data store (inputs, `data:` mounts) and on the host (`host:` mounts) to
/// local paths for a launch or a submission. A missing data path fails the launch with a `StagingError` naming it.
struct LaunchResolver: Sendable {
    /// The data store; nil on a server without one (then anything naming it fails).
    let dataStore: (any DataStore)?
    /// The apps: an app workload's launch gets its command and secret from them.
    var apps: AppService? = nil

    /// The workload's inputs, resolved in the data store.
    func inputs(_ w: Workload) throws -> [StagedInput] {
        guard let inputs = w.spec.data?.inputs, !inputs.isEmpty else { return [] }
        guard let dataStore else { throw StagingError("this server has no data store") }
        return try inputs.map { input in
            guard let source = DataPath.normalize(input.source), (try? dataStore.entry(tenant: w.tenant, path: source)) != nil else {
                throw StagingError("input \(input.source) does not exist in the data store")
            }
            return StagedInput(localSource: dataStore.localPath(tenant: w.tenant, path: source), path: input.path)
        }
    }

    /// The workload's mounts: `data:/PATH` becomes the tenant's path in the data store (which must exist),
    /// `host:/PATH` the host path itself (the allow-list was checked at submit).
    func mounts(_ w: Workload) throws -> [ResolvedMount] {
        try w.spec.mounts.map { m in
            if m.source.hasPrefix("data:") {
                let raw = String(m.source.dropFirst("data:".count))
                guard let dataStore else { throw StagingError("mount \(m.source): this server has no data store") }
                guard let path = DataPath.normalize(raw), (try? dataStore.entry(tenant: w.tenant, path: path)) != nil else {
                    throw StagingError("mount source \(m.source) does not exist in the data store")
                }
                return ResolvedMount(hostPath: dataStore.localPath(tenant: w.tenant, path: path), target: m.target, readOnly: m.readOnly, fromDataStore: true)
            }
            if m.source.hasPrefix("host:") {
                return ResolvedMount(hostPath: String(m.source.dropFirst("host:".count)), target: m.target, readOnly: m.readOnly)
            }
            throw StagingError("mount source \(m.source) is neither data:/PATH nor host:/PATH")
        }
    }
}
