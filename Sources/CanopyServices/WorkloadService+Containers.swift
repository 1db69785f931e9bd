import CanopyCore

extension WorkloadService {
    /// The policy in force: `.engine` without a catalog that has an engine is `.refuse`.
    public var effectiveImagePolicy: ImagePolicy {
        imagePolicy == .engine && images?.hasEngine != true ? .refuse : imagePolicy
    }

    /// Checks a spec's image and mounts for a workload of `tenant`: the image must be a valid reference and, where
    /// images run as containers, a name of the catalog; mounts need a container and follow `MountRules`. Returns
    /// the spec with its mounts normalized, and the engine reference of its image (nil when it runs as processes).
    func checkContainer(_ spec: WorkloadSpec, tenant: String) async throws -> (WorkloadSpec, String?) {
        var spec = spec
        var engineReference: String?
        let policy = effectiveImagePolicy
        if let image = spec.image {
            let ref = try ImageReference.parse(image, field: "image")
            switch policy {
            case .refuse:
                throw CanopyError(.conflict, imageRefusal, field: "image")
            case .runAsProcesses:
                break
            case .engine:
                let howToAdd =
                    "add it with canopy images import FILE --name \(ref.defaultCatalogName ?? "NAME:TAG"), canopy images load FILE, "
                    + "or canopy images pull REFERENCE, or ask an admin to add it as a public image"
                if ref.domain != nil || ref.digest != nil {
                    throw CanopyError(
                        .notFound, "\(image) is not a catalog name (\(ImageReference.catalogRule)); workloads run images of the catalog: \(howToAdd)",
                        field: "image")
                }
                guard let images, let record = try await images.resolve(ref.catalogName, tenant: tenant) else {
                    throw CanopyError(.notFound, "no image named \(ref.catalogName) in the catalog (canopy images ls lists it): \(howToAdd)", field: "image")
                }
                // The image's id, not its name: a name in the engine can be moved (by a load, by the engine's other
                // users), the content an id names cannot.
                engineReference = record.engineID
            }
        }
        guard !spec.mounts.isEmpty else { return (spec, engineReference) }
        guard spec.image != nil else {
            throw CanopyError.invalid("mounts", "mounts need an image: a task that runs as a host process has no mount namespace of its own (add an image)")
        }
        guard policy == .engine else {
            throw CanopyError.invalid("mounts", "this server runs image workloads as host processes, which cannot take mounts")
        }
        if spec.mounts.count > MountRules.maxMounts { throw CanopyError.invalid("mounts", "at most \(MountRules.maxMounts) mounts") }
        var targets: [String: Int] = [:]
        for (i, mount) in spec.mounts.enumerated() {
            let sourceField = "mounts[\(i)].source"
            let targetField = "mounts[\(i)].target"
            let source: MountSource
            switch MountRules.source(mount.source) {
            case .success(let s): source = s
            case .failure(let p): throw CanopyError.invalid(sourceField, p.message)
            }
            switch source {
            case .data(let path):
                guard let dataStore else { throw CanopyError.invalid(sourceField, "this server has no data store to mount from") }
                // A scheduling backend's nodes do not reach the data store: it is the server's, private to it.
                guard !runtimes.delegates else {
                    throw CanopyError.invalid(
                        sourceField,
                        "data: mounts are not available with this server's backend, whose nodes cannot reach the server's data store; "
                            + "stage the files with data.inputs, or mount a host: path an admin shares with the nodes")
                }
                guard (try? dataStore.entry(tenant: tenant, path: path)) ?? nil != nil else {
                    throw CanopyError.invalid(sourceField, "nothing at \(path) in your data store (canopy data ls \(path)); upload it with canopy data put")
                }
            case .host(let path):
                guard MountRules.isAllowed(host: path, by: hostMountAllowList) else {
                    throw CanopyError.invalid(
                        sourceField,
                        "host path \(path) is not one an admin allowed for mounts (canopy serve --host-mount PATH)"
                            + (runtimes.delegates ? "" : "; use a data: source instead"))
                }
            }
            let target: String
            switch MountRules.target(mount.target) {
            case .success(let t): target = t
            case .failure(let p): throw CanopyError.invalid(targetField, p.message)
            }
            if let other = targets[target] { throw CanopyError.invalid(targetField, "mounts[\(other)] already mounts at \(target)") }
            targets[target] = i
            spec.mounts[i] = Mount(source: source.description, target: target, readOnly: mount.readOnly)
        }
        return (spec, engineReference)
    }
}
