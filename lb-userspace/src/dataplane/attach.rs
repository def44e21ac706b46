//! Attaching and detaching: the XDP program (or, with `--attach tc`, the tc entry) on each
//! interface (its link pinned so it survives the daemon), the cgroup `connect4`/`connect6` hooks for the node's own
//! processes, and their counters. Methods of [`Dataplane`], beside its loading and maps in
//! `mod.rs`.

use super::*;

impl Dataplane {
    /// The loaded program, e.g. for `BPF_PROG_TEST_RUN`.
    pub fn program(&self) -> &Xdp {
        self.ebpf
            .program(PROGRAM_NAME)
            .and_then(|p| <&Xdp>::try_from(p).ok())
            .expect("program checked at load")
    }

    /// The kernel's id of the loaded XDP program (what `ip link` shows on an interface it
    /// is attached to); `None` if the kernel cannot say.
    pub fn program_id(&self) -> Option<u32> {
        match self.placement {
            Placement::Xdp => match self.running.as_ref() {
                Some(r) => Some(r.prog_id),
                None => self.program().info().ok().map(|i| i.id()),
            },
            Placement::Tc => self
                .ebpf
                .program(TC_PROGRAM_NAME)
                .and_then(|p| <&SchedClassifier>::try_from(p).ok())
                .and_then(|p| p.info().ok())
                .map(|i| i.id()),
        }
    }

    /// Where the program runs.
    pub fn placement(&self) -> Placement {
        self.placement
    }

    /// The tc entry, loaded (verified) if it was not yet, e.g. for `BPF_PROG_TEST_RUN`.
    ///
    /// # Errors
    /// The object lacks it or the verifier refuses it.
    pub fn tc_program(&mut self) -> Result<&SchedClassifier, DataplaneError> {
        Ok(&*self.tc_program_mut()?)
    }

    /// The tc entry once [`Dataplane::tc_program`] (or a tc attach) has loaded it.
    pub fn tc_program_loaded(&self) -> Option<&SchedClassifier> {
        self.ebpf
            .program(TC_PROGRAM_NAME)
            .and_then(|p| <&SchedClassifier>::try_from(p).ok())
            .filter(|p| p.fd().is_ok())
    }

    /// The tc entry, verified on first use (an XDP-only run never loads it).
    pub(super) fn tc_program_mut(&mut self) -> Result<&mut SchedClassifier, DataplaneError> {
        let p: &mut SchedClassifier = self
            .ebpf
            .program_mut(TC_PROGRAM_NAME)
            .ok_or(DataplaneError::Map {
                name: "program",
                reason: format!("{TC_PROGRAM_NAME} not in the object"),
            })?
            .try_into()?;
        if p.fd().is_err() {
            p.load()?;
        }
        Ok(p)
    }

    pub(super) fn program_mut(&mut self) -> &mut Xdp {
        self.ebpf
            .program_mut(PROGRAM_NAME)
            .and_then(|p| <&mut Xdp>::try_from(p).ok())
            .expect("program checked at load")
    }

    /// Attaches to `interface`. `Auto` tries native mode, then generic with a warning.
    /// Returns the mode used.
    ///
    /// # Errors
    /// [`DataplaneError::Attach`] when no allowed mode works.
    pub fn attach(
        &mut self,
        interface: &str,
        mode: XdpAttachMode,
        placement: Placement,
    ) -> Result<&'static str, DataplaneError> {
        let ifname = std::ffi::CString::new(interface).map_err(|_| DataplaneError::Attach {
            interface: interface.into(),
            mode: "any",
            reason: "interface name contains NUL".into(),
        })?;
        if self.links.iter().any(|l| l.interface == interface) {
            return Err(DataplaneError::Attach {
                interface: interface.into(),
                mode: "any",
                reason: "already attached by this xvip".into(),
            });
        }
        self.placement = placement;
        if placement == Placement::Tc {
            let how = self.attach_tc(interface)?;
            // An earlier xvip's XDP link on this interface goes now that tc serves.
            self.drop_other_pin(interface, LINK_PIN);
            return Ok(how);
        }
        let attached = self.attach_xdp(interface, mode, &ifname)?;
        self.drop_other_pin(interface, TC_LINK_PIN);
        Ok(attached)
    }

    /// Removes the pinned link `name` of the other placement (detaching that program),
    /// left by an earlier xvip run with another `--attach`.
    fn drop_other_pin(&self, interface: &str, name: &str) {
        let Some(dir) = self.pins.as_ref() else {
            return;
        };
        let path = dir.join(name);
        if path.exists() && std::fs::remove_file(&path).is_ok() {
            log::info!(
                "{interface}: removed the earlier run's {} link ({})",
                if name == LINK_PIN { "XDP" } else { "tc" },
                path.display()
            );
        }
    }

    /// tc ingress: tcx where the kernel has it (6.6), else a filter on a clsact qdisc; an
    /// earlier xvip's pinned tcx link is updated in place.
    fn attach_tc(&mut self, interface: &str) -> Result<&'static str, DataplaneError> {
        let fail = |reason: String| DataplaneError::Attach {
            interface: interface.into(),
            mode: "tc",
            reason,
        };
        let pin = self.pins.as_ref().map(|d| d.join(TC_LINK_PIN));
        if let Some(path) = pin.as_ref().filter(|p| p.exists()) {
            let pinned =
                PinnedLink::from_pin(path).map_err(|e| fail(format!("{}: {e}", path.display())))?;
            let fd: FdLink = pinned.into();
            let link = SchedClassifierLink::try_from(fd).map_err(|e| fail(e.to_string()))?;
            let prog = self.tc_program_mut()?;
            let id = prog.attach_to_link(link)?;
            let mut l = IfLink::new(interface);
            l.tc_owned = prog.take_link(id).ok();
            l.pinned = Some(PinnedLink::from_pin(path).map_err(|e| fail(e.to_string()))?);
            self.links.push(l);
            log::info!("{interface}: replaced the pinned tc program in place");
            return Ok("tc (pinned)");
        }
        let tcx = aya::util::KernelVersion::current()
            .is_ok_and(|v| v >= aya::util::KernelVersion::new(6, 6, 0));
        let ifname = std::ffi::CString::new(interface).map_err(|_| fail("NUL in name".into()))?;
        if !tcx {
            // Already there is fine; any other failure shows in the attach below.
            let _ = aya::programs::tc::qdisc_add_clsact(ifname.as_c_str());
        }
        let prog = self.tc_program_mut()?;
        let id = prog
            .attach(ifname.as_c_str(), TcAttachType::Ingress)
            .map_err(|e| fail(error_chain(&e)))?;
        let mut l = IfLink::new(interface);
        if !tcx {
            // A clsact filter: no BPF link to pin; it goes when this process detaches.
            log::warn!(
                "{interface}: no tcx in this kernel: a clsact filter, not pinned (a restart attaches afresh)"
            );
            l.tc_link = Some(id);
            self.links.push(l);
            return Ok("tc (clsact)");
        }
        let link = prog.take_link(id).map_err(|e| fail(e.to_string()))?;
        let fd = FdLink::try_from(link).map_err(|e| fail(e.to_string()))?;
        match pin {
            Some(path) => {
                l.pinned = Some(fd.pin(&path).map_err(|e| {
                    fail(format!("cannot pin the tc link at {}: {e}", path.display()))
                })?);
            }
            None => {
                l.tc_owned =
                    Some(SchedClassifierLink::try_from(fd).map_err(|e| fail(e.to_string()))?);
            }
        }
        self.links.push(l);
        Ok("tc")
    }

    /// XDP in `mode`, or the earlier xvip's pinned link updated in place.
    fn attach_xdp(
        &mut self,
        interface: &str,
        mode: XdpAttachMode,
        ifname: &std::ffi::CStr,
    ) -> Result<&'static str, DataplaneError> {
        if let Some(r) = self.running.as_mut() {
            let Some(at) = r.links.iter().position(|(i, _)| i == interface) else {
                return Err(DataplaneError::Attach {
                    interface: interface.into(),
                    mode: "adopted",
                    reason: "the adopted program has no pinned link on it".into(),
                });
            };
            let (_, pinned) = r.links.remove(at);
            let mut l = IfLink::new(interface);
            l.pinned = Some(pinned);
            self.links.push(l);
            log::info!("{interface}: kept the running program (adopted)");
            return Ok("pinned (adopted)");
        }
        if self.program_mut().fd().is_err() {
            self.program_mut().load()?;
        }
        // Another program is about to take the links: no marker may name the old one.
        if let Some(dir) = self.pins.as_ref() {
            running::clear_markers(dir);
        }
        if let Some(path) = self.link_pin(interface)
            && path.exists()
        {
            return self.replace_pinned(&path, interface);
        }
        let tries: &[(XdpMode, &'static str)] = match mode {
            XdpAttachMode::Auto => &[(XdpMode::Driver, "native"), (XdpMode::Skb, "generic")],
            XdpAttachMode::Native => &[(XdpMode::Driver, "native")],
            XdpAttachMode::Generic => &[(XdpMode::Skb, "generic")],
        };
        let mut last = String::new();
        for (i, (m, name)) in tries.iter().enumerate() {
            match self.program_mut().attach(ifname, *m) {
                Ok(link) => {
                    if i > 0 {
                        log::warn!(
                            "{interface}: native XDP failed ({last}); attached in generic mode, which is slower"
                        );
                    }
                    let mut l = IfLink::new(interface);
                    l.link = Some(link);
                    self.links.push(l);
                    if let Err(reason) = self.pin_link(interface) {
                        // The link is gone with the failed pin: nothing stays attached.
                        self.links.retain(|l| l.interface != interface);
                        return Err(DataplaneError::Attach {
                            interface: interface.into(),
                            mode: name,
                            reason,
                        });
                    }
                    return Ok(name);
                }
                Err(e) => last = error_chain(&e),
            }
        }
        Err(DataplaneError::Attach {
            interface: interface.into(),
            mode: tries[tries.len() - 1].1,
            reason: last,
        })
    }

    /// Where `interface`'s link is pinned: `link` for the interface the pins are keyed by,
    /// `link@IFNAME` beside it for the others.
    pub(super) fn link_pin(&self, interface: &str) -> Option<PathBuf> {
        let dir = self.pins.as_ref()?;
        Some(match self.pin_interface.as_deref() {
            Some(first) if first != interface => dir.join(pins::extra_link_pin(interface)),
            _ => dir.join(LINK_PIN),
        })
    }

    fn if_link(&mut self, interface: &str) -> Option<&mut IfLink> {
        self.links.iter_mut().find(|l| l.interface == interface)
    }

    /// The interfaces attached to, in order.
    pub fn attached_interfaces(&self) -> Vec<String> {
        self.links.iter().map(|l| l.interface.clone()).collect()
    }

    /// Pins the fresh link so the program stays attached if this process dies. A link that
    /// cannot be pinned is closed by the failed attempt (aya consumes it), which detaches
    /// the program: that is an attach failure, not a warning.
    fn pin_link(&mut self, interface: &str) -> Result<(), String> {
        let Some(path) = self.link_pin(interface) else {
            return Ok(());
        };
        let Some(id) = self.if_link(interface).and_then(|l| l.link.take()) else {
            return Ok(());
        };
        let link = self
            .program_mut()
            .take_link(id)
            .map_err(|e| format!("cannot take the XDP link to pin it: {e}"))?;
        let fd = FdLink::try_from(link).map_err(|e| {
            format!("XDP attached through netlink ({e}), which cannot be pinned and adopted")
        })?;
        let pinned = fd
            .pin(&path)
            .map_err(|e| format!("cannot pin the XDP link at {}: {e}", path.display()))?;
        if let Some(l) = self.if_link(interface) {
            l.pinned = Some(pinned);
        }
        Ok(())
    }

    /// Swaps this program into the pinned link of an earlier xvip: one atomic update, no
    /// moment without a program.
    fn replace_pinned(
        &mut self,
        path: &Path,
        interface: &str,
    ) -> Result<&'static str, DataplaneError> {
        let fail = |reason: String| DataplaneError::Attach {
            interface: interface.into(),
            mode: "pinned",
            reason,
        };
        let pinned =
            PinnedLink::from_pin(path).map_err(|e| fail(format!("{}: {e}", path.display())))?;
        let fd: FdLink = pinned.into();
        let xdp = XdpLink::try_from(fd).map_err(|e| fail(e.to_string()))?;
        let id = self.program_mut().attach_to_link(xdp)?;
        // The program now owns the link and the pin stays valid: keep our own references to
        // both, for unpinning and closing at shutdown.
        let mut l = IfLink::new(interface);
        l.owned = self.program_mut().take_link(id).ok();
        l.pinned = Some(PinnedLink::from_pin(path).map_err(|e| fail(e.to_string()))?);
        self.links.push(l);
        log::info!("{interface}: replaced the pinned program in place");
        Ok("pinned")
    }

    /// Detaches the program from every interface and removes the pins (`interface`, the
    /// one they are keyed by, names them in errors).
    ///
    /// # Errors
    /// A failed detach.
    pub fn detach(&mut self, interface: &str) -> Result<(), DataplaneError> {
        let mut first_err = None;
        for mut l in std::mem::take(&mut self.links) {
            if let Some(link) = l.link.take()
                && let Err(e) = self.program_mut().detach(link)
            {
                first_err.get_or_insert(e);
            }
            if let Some(link) = l.tc_link.take()
                && let Ok(p) = self.tc_program_mut()
                && let Err(e) = p.detach(link)
            {
                first_err.get_or_insert(e);
            }
            if let Some(p) = l.pinned.take() {
                drop(p.unpin());
            }
            // With the pin gone, closing the last reference detaches the program.
            drop(l.owned.take());
            drop(l.tc_owned.take());
        }
        for p in [self.connect4.take(), self.connect6.take()]
            .into_iter()
            .flatten()
        {
            drop(p.unpin());
        }
        drop(self.connect4_owned.take());
        drop(self.connect6_owned.take());
        if let Some(dir) = self.pins.as_ref() {
            let _ = remove_pins(dir, interface);
        }
        match first_err {
            Some(e) => Err(e.into()),
            None => Ok(()),
        }
    }

    /// Leaves the program attached after this process exits (`--keep-attached`): the link
    /// and the maps stay pinned, and the next `xvip run` adopts them.
    pub fn keep_attached(&mut self) {
        for mut l in std::mem::take(&mut self.links) {
            if l.pinned.is_none()
                && let Some(link) = l.link.take()
                && let Ok(owned) = self.program_mut().take_link(link)
            {
                log::warn!(
                    "{}: the XDP link is not pinned: it stays attached only while this process lives",
                    l.interface
                );
                std::mem::forget(owned);
            }
            if l.pinned.is_none()
                && let Some(owned) = l.tc_owned.take()
            {
                log::warn!(
                    "{}: the tc link is not pinned: it stays attached only while this process lives",
                    l.interface
                );
                std::mem::forget(owned);
            }
        }
        self.connect4 = None;
        self.connect6 = None;
        for l in [self.connect4_owned.take(), self.connect6_owned.take()]
            .into_iter()
            .flatten()
        {
            std::mem::forget(l);
        }
    }

    /// Balances `connect()`s to the VIPs from processes in this network namespace
    /// (`netns_cookie`): cgroup `connect4` and `connect6` programs on the cgroup v2 root
    /// `cgroup`, which they share with every other program there. Adopts (and updates in
    /// place) the pinned links of an earlier xvip.
    ///
    /// # Errors
    /// Loading or attaching the program failed.
    pub fn attach_connect4(
        &mut self,
        cgroup: &std::fs::File,
        netns_cookie: u64,
    ) -> Result<(), DataplaneError> {
        let cfg = self.ebpf.map_mut(SOCK_CONFIG).ok_or(DataplaneError::Map {
            name: "SOCK_CONFIG",
            reason: "not in the object".into(),
        })?;
        let mut cfg: Array<&mut MapData, u64> =
            Array::try_from(cfg).map_err(|e| DataplaneError::Map {
                name: "SOCK_CONFIG",
                reason: e.to_string(),
            })?;
        op("SOCK_CONFIG", cfg.set(0, &netns_cookie, 0))?;
        (self.connect4, self.connect4_owned) =
            self.attach_sock_addr(cgroup, CONNECT4_PROGRAM, CONNECT4_PIN, "connect4")?;
        // IPv6 VIPs' connects: the same table, maps and namespace filter.
        (self.connect6, self.connect6_owned) =
            self.attach_sock_addr(cgroup, CONNECT6_PROGRAM, CONNECT6_PIN, "connect6")?;
        Ok(())
    }

    /// Loads and attaches one cgroup sock-addr program (`connect4`, `connect6`) to the cgroup
    /// v2 root, adopting (and updating in place) the pinned link `pin_name` of an earlier
    /// xvip; returns its link, pinned when pinning, else owned.
    fn attach_sock_addr(
        &mut self,
        cgroup: &std::fs::File,
        name: &str,
        pin_name: &str,
        mode: &'static str,
    ) -> Result<(Option<PinnedLink>, Option<CgroupSockAddrLink>), DataplaneError> {
        let pin = self.pins.as_ref().map(|d| d.join(pin_name));
        let program: &mut CgroupSockAddr = self
            .ebpf
            .program_mut(name)
            .ok_or(DataplaneError::Map {
                name: "program",
                reason: format!("{name} not in the object"),
            })?
            .try_into()?;
        program.load()?;
        if let Some(path) = pin.as_ref().filter(|p| p.exists()) {
            let fail = |reason: String| DataplaneError::Attach {
                interface: "cgroup".into(),
                mode: "pinned",
                reason,
            };
            let fd: FdLink = PinnedLink::from_pin(path)
                .map_err(|e| fail(e.to_string()))?
                .into();
            let link = CgroupSockAddrLink::try_from(fd).map_err(|e| fail(e.to_string()))?;
            let id = program.attach_to_link(link)?;
            let owned = program.take_link(id).ok();
            let pinned = PinnedLink::from_pin(path).map_err(|e| fail(e.to_string()))?;
            return Ok((Some(pinned), owned));
        }
        // Links on a cgroup always coexist with other links; the kernel refuses mode flags here.
        let id = program
            .attach(cgroup, CgroupAttachMode::Single)
            .map_err(|e| DataplaneError::Attach {
                interface: "the cgroup v2 root".into(),
                mode,
                reason: error_chain(&e),
            })?;
        let link = program.take_link(id)?;
        Ok(match (pin, FdLink::try_from(link)) {
            (Some(path), Ok(fd)) => match fd.pin(&path) {
                Ok(p) => (Some(p), None),
                Err(e) => {
                    log::warn!("cannot pin the {mode} link at {}: {e}", path.display());
                    (None, None)
                }
            },
            (_, Ok(fd)) => (None, CgroupSockAddrLink::try_from(fd).ok()),
            (_, Err(e)) => {
                log::warn!("{mode} attached without a link ({e}): it cannot be pinned");
                (None, None)
            }
        })
    }

    /// Connects balanced by the `connect4` hook, and connects to a VIP left alone because
    /// no backend was available.
    pub fn connect4_counts(&self) -> (u64, u64) {
        let Some(m) = self.ebpf.map(SOCK_COUNTS) else {
            return (0, 0);
        };
        let Ok(a) = PerCpuArray::<&MapData, u64>::try_from(m) else {
            return (0, 0);
        };
        let sum = |i: u32| a.get(&i, 0).map(|v| v.iter().sum()).unwrap_or(0);
        (sum(0), sum(1))
    }
}
