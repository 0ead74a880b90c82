// The hub's script inside the stock OHIF viewer (docs/viewer.md).
//
// OHIF exposes its services and Cornerstone3D on window once the viewer is up
// (window.services, window.cornerstone, window.cornerstoneTools). This script
// waits for them, then:
//  - side by side (two StudyInstanceUIDs): links the viewports' zoom/pan and
//    image scrolling with OHIF's synchronizers;
//  - staff (meta vethub-annotate=1): loads the studies' saved annotations from
//    GET /api/v1/studies/{uid}/annotations into Cornerstone's annotation state
//    and saves them with PUT (session cookie + X-CSRF-Token) a moment after a
//    measurement is made, moved or deleted.
//  - before the first viewport: one WebGL context for Cornerstone's viewports
//    instead of its default pool of seven (see oneContext below).
// window.vethub reports what it did (the browser tests read it).
(function () {
  "use strict";

  var SAVE_DELAY_MS = 700;
  var COMPARE = "@ohif/hpCompare";
  var TOOL_TYPES = {
    Length: "length",
    Angle: "angle",
    CobbAngle: "angle",
    ArrowAnnotate: "arrow",
    EllipticalROI: "ellipse",
    CircleROI: "ellipse",
    RectangleROI: "rectangle",
    Probe: "probe",
    DragProbe: "probe",
  };

  function meta(name) {
    var el = document.querySelector('meta[name="' + name + '"]');
    return el ? el.getAttribute("content") : null;
  }

  var params = new URLSearchParams(location.search);
  var studyUids = (params.get("StudyInstanceUIDs") || params.get("studyInstanceUIDs") || "")
    .split(",")
    .filter(Boolean);
  var state = (window.vethub = {
    studies: studyUids,
    linked: false,
    loaded: null, // annotations restored, once done
    versions: {}, // study -> saved version
    saves: 0,
    errors: [],
    contexts: null, // WebGL contexts asked of Cornerstone, once set
  });

  function every(ms, test, then) {
    var timer = setInterval(function () {
      var found;
      try {
        found = test();
      } catch (e) {
        found = null;
      }
      if (found) {
        clearInterval(timer);
        then(found);
      }
    }, ms);
  }

  // Cornerstone opens a pool of seven WebGL contexts when OHIF makes its rendering
  // engine; the viewer shows one or two viewports. One context (Cornerstone's own
  // choice on mobile) brought the first image 0.2 s sooner with software WebGL
  // (docs/viewer.md, Speed). It must be set after Cornerstone's init (which
  // replaces its configuration) and before the engine exists.
  var contextTimer = setInterval(function () {
    var cs = window.cornerstone;
    if (!cs || !cs.isCornerstoneInitialized || !cs.isCornerstoneInitialized()) return;
    clearInterval(contextTimer);
    if (cs.getRenderingEngines().length) return; // too late: keep the default
    var config = cs.getConfiguration();
    var rendering = Object.assign({}, config.rendering, { webGlContextCount: 1 });
    cs.setConfiguration(Object.assign({}, config, { rendering: rendering }));
    state.contexts = 1;
  }, 5);

  function notify(message, type) {
    state.errors.push(message);
    try {
      window.services.uiNotificationService.show({ title: "vethub", message: message, type: type || "error" });
    } catch (e) {
      console.warn(message);
    }
  }

  // The Cornerstone viewports showing an image, once the viewer has some.
  function liveViewports() {
    var s = window.services;
    if (!s || !window.cornerstone) return null;
    var grid = s.viewportGridService.getState().viewports;
    var out = [];
    grid.forEach(function (vp) {
      var id = vp.viewportOptions && vp.viewportOptions.viewportId;
      var csvp = id && s.cornerstoneViewportService.getCornerstoneViewport(id);
      if (csvp && csvp.getCurrentImageId && csvp.getCurrentImageId()) out.push({ id: id, viewport: csvp });
    });
    return out.length ? out : null;
  }

  // Side by side: OHIF's compare protocol opens as 2x2 (current and prior, two
  // series each); one row of two fits radiographs. Every viewport it shows (they
  // are re-created as the layout or series change) joins one zoom/pan and one
  // scroll synchronizer.
  function linkViewports() {
    var s = window.services;
    var vps = liveViewports();
    if (!vps) return;
    var hp = s.hangingProtocolService.getState();
    if (hp.protocolId === COMPARE && hp.stageIndex === 0 && !state.staged) {
      state.staged = true;
      window.commandsManager.runCommand("setHangingProtocol", { protocolId: COMPARE, stageIndex: 1 });
      return;
    }
    vps.forEach(function (v) {
      var joined = s.syncGroupService.getSynchronizersForViewport(v.id).map(function (sync) {
        return sync.id;
      });
      var engine = v.viewport.getRenderingEngine().id;
      if (joined.indexOf("vethub-zoompan") < 0) {
        s.syncGroupService.addViewportToSyncGroup(v.id, engine, { type: "zoompan", id: "vethub-zoompan", source: true, target: true });
      }
      if (joined.indexOf("vethub-slice") < 0) {
        s.syncGroupService.addViewportToSyncGroup(v.id, engine, { type: "imageSlice", id: "vethub-slice", source: true, target: true });
      }
    });
    state.linked = vps.length > 1 && (hp.protocolId !== COMPARE || hp.stageIndex === 1);
  }
  if (studyUids.length > 1) {
    state.staged = false;
    setInterval(function () {
      try {
        linkViewports();
      } catch (e) {
        console.warn("vethub: linking the viewports failed", e);
      }
    }, 300);
  }

  if (meta("vethub-annotate") !== "1" || !studyUids.length) return;
  var csrf = meta("vethub-csrf") || "";
  var restoring = false;
  var timer = null;
  var saved = {}; // study -> fingerprint of what the hub holds

  function api(uid) {
    return "/api/v1/studies/" + encodeURIComponent(uid) + "/annotations";
  }

  // "wadors:/dicomweb/studies/S/series/R/instances/I/frames/F" -> its UIDs.
  function imageRef(imageId) {
    var m = /studies\/([^/]+)\/series\/([^/]+)\/instances\/([^/]+)(?:\/frames\/(\d+))?/.exec(imageId || "");
    if (!m) return null;
    return { study: m[1], series: m[2], sop: m[3], frame: m[4] ? Number(m[4]) : 1 };
  }

  function toItem(ann) {
    var md = ann.metadata || {};
    var type = TOOL_TYPES[md.toolName];
    var ref = imageRef(md.referencedImageId);
    var world = ann.data && ann.data.handles && ann.data.handles.points;
    if (!type || !ref || !world || !world.length) return null;
    var toImage = window.cornerstone.utilities.worldToImageCoords;
    var stats = (ann.data && ann.data.cachedStats) || {};
    var firstStats = stats[Object.keys(stats)[0]] || {};
    return {
      type: type,
      tool: md.toolName,
      study_instance_uid: ref.study,
      series_instance_uid: ref.series,
      sop_instance_uid: ref.sop,
      frame: ref.frame,
      points: world.map(function (p) {
        return Array.from(toImage(md.referencedImageId, p));
      }),
      world: world.map(function (p) {
        return Array.from(p);
      }),
      text: ann.data.text || ann.data.label || "",
      value: firstStats.length !== undefined ? firstStats.length : firstStats.angle,
      unit: firstStats.unit || null,
      image_id: md.referencedImageId,
      frame_of_reference_uid: md.FrameOfReferenceUID,
      view_plane_normal: md.viewPlaneNormal,
      view_up: md.viewUp,
    };
  }

  function fromItem(item) {
    return {
      annotationUID: undefined,
      highlighted: false,
      invalidated: true,
      isLocked: false,
      isVisible: true,
      metadata: {
        toolName: item.tool,
        referencedImageId: item.image_id,
        FrameOfReferenceUID: item.frame_of_reference_uid,
        viewPlaneNormal: item.view_plane_normal,
        viewUp: item.view_up,
      },
      data: {
        handles: {
          points: item.world,
          activeHandleIndex: null,
          textBox: { hasMoved: false, worldPosition: [0, 0, 0], worldBoundingBox: { topLeft: [0, 0, 0], topRight: [0, 0, 0], bottomLeft: [0, 0, 0], bottomRight: [0, 0, 0] } },
        },
        text: item.text || "",
        label: item.text || "",
        cachedStats: {},
      },
    };
  }

  function allItems() {
    var anns = window.cornerstoneTools.annotation.state.getAllAnnotations() || [];
    return anns.map(toItem).filter(Boolean);
  }

  // What makes two sets of annotations the same (not the stats drawn from them).
  function fingerprint(items) {
    return JSON.stringify(
      items.map(function (i) {
        var points = i.world.map(function (p) {
          return p.map(function (v) {
            return Math.round(v * 1000) / 1000;
          });
        });
        return [i.tool, i.sop_instance_uid, i.frame, points, i.text];
      })
    );
  }

  function save() {
    timer = null;
    var items = allItems();
    studyUids.forEach(function (uid) {
      if (!(uid in state.versions)) return; // not loaded: never overwrite blindly
      var mine = items.filter(function (i) {
        return i.study_instance_uid === uid;
      });
      var print = fingerprint(mine);
      if (print === saved[uid]) return; // redrawn, not changed
      saved[uid] = print;
      fetch(api(uid), {
        method: "PUT",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
        body: JSON.stringify({ annotations: mine, base_version: state.versions[uid] }),
      })
        .then(function (r) {
          return r.json().then(function (body) {
            if (!r.ok) throw new Error(body.detail || "HTTP " + r.status);
            state.versions[uid] = body.version;
            state.saves += 1;
          });
        })
        .catch(function (e) {
          saved[uid] = null; // try again on the next change
          notify("The measurements were not saved: " + e.message);
        });
    });
  }

  function changed() {
    if (restoring || state.loaded === null) return;
    if (timer) clearTimeout(timer);
    timer = setTimeout(save, SAVE_DELAY_MS);
  }

  function restore(documents) {
    var cst = window.cornerstoneTools;
    restoring = true;
    var count = 0;
    try {
      documents.forEach(function (doc) {
        state.versions[doc.study_instance_uid] = doc.version;
        var usable = doc.annotations.filter(function (item) {
          return item.tool && item.world && item.image_id;
        });
        saved[doc.study_instance_uid] = fingerprint(usable);
        usable.forEach(function (item) {
          cst.annotation.state.addAnnotation(fromItem(item), item.frame_of_reference_uid);
          count += 1;
        });
      });
      window.cornerstone.getRenderingEngines().forEach(function (engine) {
        engine.render();
      });
    } finally {
      restoring = false;
    }
    state.loaded = count;
  }

  every(200, liveViewports, function () {
    var events = window.cornerstoneTools.Enums.Events;
    [events.ANNOTATION_COMPLETED, events.ANNOTATION_MODIFIED, events.ANNOTATION_REMOVED].forEach(function (name) {
      window.cornerstone.eventTarget.addEventListener(name, changed);
    });
    Promise.all(
      studyUids.map(function (uid) {
        return fetch(api(uid), { credentials: "same-origin" }).then(function (r) {
          if (!r.ok) throw new Error("HTTP " + r.status);
          return r.json();
        });
      })
    )
      .then(restore)
      .catch(function (e) {
        state.loaded = 0;
        notify("Saved measurements could not be loaded: " + e.message, "warning");
      });
  });
})();
