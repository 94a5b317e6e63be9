"""The widget's file actions: Save and Load edit files (with their layer and setting), overwrite questions,
switching layer for a loaded edit, and Export of the edited generator.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from pathlib import Path

from rewrite.app.base import UserError, reports_errors
from rewrite.app.parts import DOWNLOAD_LIMIT, SOLVER_CHOICES, download_link
from rewrite.core import edits
from rewrite.core.rewriter import RewriteError
from rewrite.formats import editfile
from rewrite.formats.registry import SOLVERS
from rewrite.formats.savededits import export_path, saved_edit_names, saved_edit_path
from utils.generators import save_generator

__all__ = ['FileActionsMixin']


class FileActionsMixin:
    """GanRewriteApp's fileactions methods (see rewrite/app/rewriteapp.py for the state they share)."""

    # ---- rewriting ---------------------------------------------------------------------------------------
    def _settings(self) -> dict:
        solver = self.solver_box.value
        if solver not in SOLVER_CHOICES:
            raise UserError(f'choose a solver among {", ".join(SOLVER_CHOICES)}')
        return dict(rank=int(self.rank_box.value), lr=float(self.lr_box.value), niter=int(self.niter_box.value),
                    piter=int(self.piter_box.value), solver=solver)

    def _file_options(self, solver: str) -> dict:
        """The loaded edit's solver options (other than the Adam settings the boxes hold) when its solver is the
        one chosen: Execute Change and Erase run with them, Save writes them back."""
        if self.file_setting.get('solver') != solver:
            return {}
        return {name: value for name, value in self.file_setting.get('solver_options', {}).items()
                if name not in edits.ADAM_SETTINGS}

    def edit_setting(self) -> dict:
        """The fields Save writes: this app's layer, the rank and solver it runs with, the solver options that
        differ from the defaults, the model (rewrite.formats.editfile)."""
        settings = self._settings()
        solver = settings['solver']
        options = edits.solver_settings(self.gw, settings['niter'], settings['piter'], settings['lr'],
                                        self._file_options(solver))
        fields = {'layer': self.gw.layernum, 'rank': settings['rank'], 'solver': solver}
        changed = SOLVERS[solver].differing(options)
        if changed:
            fields['solver_options'] = changed
        return fields | {'model': self.gw.setting()['model']}

    def checked_request(self, needed: Sequence[str], action: str) -> dict:
        missing = [name for name in needed if name not in self.request]
        hints = {'object': 'Copy a region', 'paste': 'select where it goes and click Paste'}
        if missing:
            raise UserError(f'{action} needs {" and ".join(missing)}: ' + ', then '.join(hints[m] for m in missing))
        resolution = self.gw.site.mask_resolution
        editfile.validate_request(self.request, self.gw.num_images, resolution)
        return copy.deepcopy(self.request)

    # ---- files -------------------------------------------------------------------------------------------
    def saved_names(self) -> list[str]:
        """Names of the edits saved in mask_dir: NAME, then FOLDER/NAME (e.g. the bundled demo/...)."""
        return saved_edit_names(self.mask_dir)

    def _edit_path(self) -> Path:
        return saved_edit_path(self.mask_dir, self.name_box.value)

    @reports_errors('Save')
    def save(self, _button=None) -> None:
        """Saves the edit under the typed name; an existing file is replaced only after Overwrite."""
        path = self._edit_path()
        if not any(self.request.get(name) for name in editfile.EDIT_FIELDS):
            raise UserError('there is nothing to save: Copy, Paste or Add to Context first')
        if path.exists():
            self._ask_overwrite(path, self._write_edit, 'type another name to save this edit')
            return
        self._write_edit(path)

    def _ask_overwrite(self, path: Path, write: Callable[[Path], None], other: str) -> None:
        """Shows Overwrite / Keep and one message saying that `path` exists; Overwrite calls write(path),
        Keep says `other` (what to do instead)."""
        self._pending_save, self._pending_write, self._keep_hint = path, write, other
        self.confirm_label.value = ''
        self.confirm_row.layout.display = None
        self.show_message(f'{path.name} already exists in {path.parent}: click Overwrite to replace it, or Keep',
                          warning=True)

    @reports_errors('Overwrite')
    def confirm_overwrite(self, _button=None) -> None:
        path, self._pending_save = self._pending_save, None
        self.confirm_row.layout.display = 'none'
        if path is None:
            raise UserError('nothing to overwrite: click Save or Export first')
        (self._pending_write or self._write_edit)(path)

    @reports_errors('Keep')
    def keep_saved(self, _button=None) -> None:
        path, self._pending_save = self._pending_save, None
        self.confirm_row.layout.display = 'none'
        self.show_message(f'kept {path.name}: {self._keep_hint}' if path else 'nothing to keep')

    def _write_edit(self, path: Path) -> None:
        setting = self.edit_setting()
        request = {name: value for name, value in self.request.items() if name not in editfile.SETTING_FIELDS}
        editfile.validate_request({**request, **setting}, num_images=self.gw.num_images)   # before any folder
        path.parent.mkdir(parents=True, exist_ok=True)      # mask_dir (or FOLDER in it)
        editfile.save_edit(path, {**request, **setting}, num_images=self.gw.num_images)
        self.name_box.options = self.saved_names()
        self.show_message(f'saved {path} (layer {setting["layer"]}, rank {setting["rank"]}, {setting["solver"]})')

    @reports_errors('Load')
    def load(self, _button=None) -> None:
        path = self._edit_path()
        if not path.is_file():
            known = ', '.join(self.saved_names()) or 'none yet'
            raise UserError(f'no saved edit named {path.stem!r} in {self.mask_dir} (saved: {known})')
        parsed = editfile.load_edit(path, num_images=self.gw.num_images)
        setting = parsed.setting()
        named_layer, named_rank = editfile.setting_from_name(path)    # files that record no setting: their name
        if 'layer' not in setting and named_layer is not None:
            setting |= {'layer': named_layer} | ({} if 'rank' in setting else {'rank': named_rank})
        self._use_request(parsed.to_json(), setting)
        action = 'Erase' if parsed.object is None and parsed.paste is not None else 'Execute Change'
        if self.other_layer is not None:
            self.show_message(f'loaded {path.stem}: it was made for layer {self.other_layer} (rank '
                              f'{self.rank_box.value}), and this interface rewrites layer {self.gw.layernum}: click '
                              f'"Switch to layer {self.other_layer}" to rewrite that layer, then {action}',
                              warning=True)
        else:
            self.show_message(f'loaded {path.stem} (layer {self.gw.layernum}, rank {self.rank_box.value}, '
                              f'{self.solver_box.value}): click {action} to apply it')

    @reports_errors('Set request')
    def set_request(self, request: dict) -> None:
        """Uses an edit request (a dict in the edit-file format) as if it had been loaded."""
        parsed = editfile.validate_request(request, num_images=self.gw.num_images)
        self._use_request(parsed.to_json(), parsed.setting())
        if self.other_layer is not None:
            self.show_message(f'request set: it was made for layer {self.other_layer}, and this interface rewrites '
                              f'layer {self.gw.layernum}: click "Switch to layer {self.other_layer}"', warning=True)
        else:
            self.show_message('request set: click Execute Change to apply it')

    def _use_request(self, request: dict, setting: dict | None = None) -> None:
        """The request's regions (its setting fields apart) become the app's; its setting (layer, rank, solver,
        solver options) sets the boxes, and a layer other than the app's asks to switch first."""
        setting = setting or {}
        self.loss_label.value = ''                           # the figures of a solve of the edit before
        self.request = {name: value for name, value in request.items() if name not in editfile.SETTING_FIELDS}
        self.file_setting = dict(setting)
        if 'solver' in setting:
            self.solver_box.value = setting['solver']
        recorded = setting.get('solver_options', {})
        for name, box in (('lr', self.lr_box), ('niter', self.niter_box), ('piter', self.piter_box)):
            if name in recorded:
                box.value = recorded[name]
        if 'rank' in setting:
            self.rank_box.value = min(int(setting['rank']), int(self.rank_box.max))
        layer = setting.get('layer')
        self.ask_layer(layer if layer is not None and layer != self.gw.layernum else None)
        self.preserve_panel.repaint()
        self._context_changed()
        self._repaint_copy()
        self._repaint_paste()

    def ask_layer(self, layer: int | None) -> None:
        """With `layer` (the loaded edit's, not the app's): the row offering to switch to it, Execute Change and
        Erase disabled until the user switches or overrides; None: that row hidden, both enabled."""
        self.other_layer = layer
        if layer is None:
            self.layer_row.layout.display = 'none'
        else:
            self.layer_label.value = (f'This edit was made for <b>layer {layer}</b>; the interface rewrites '
                                      f'<b>layer {self.gw.layernum}</b>.')
            self.switch_layer_btn.description = f'Switch to layer {layer}'
            self.override_layer_btn.description = f'Apply at layer {self.gw.layernum} anyway'
            self.layer_row.layout.display = None
        self.execute_btn.disabled = self.erase_btn.disabled = layer is not None
        self._show_setting()

    def switch_layer(self, layer: int) -> None:
        """A rewriter of `layer` on the same model and z-sample replaces the app's (only while no change is
        applied, so that Revert still means the original weights); raises UserError otherwise."""
        if layer == self.gw.layernum:
            return
        if self.gw.history:
            raise UserError(f'undo or revert the applied changes before switching to layer {layer}')
        old = self.gw
        try:
            self.gw = type(old)(old.model, old.zds, layer, cachedir=old.cachedir, key_method=old.key_method,
                                batch_size=old.batch_size, progress=old.progress,
                                damage_samples=old.damage_probe.samples if old.damage_probe is not None else 0,
                                model_name=getattr(old, 'model_name', None))
        except RewriteError as e:
            raise UserError(f'cannot rewrite layer {layer}: {e}') from None
        self.rank_box.max = int(self.gw.k_shape[1])
        self.drank_box.max = int(self.gw.k_shape[1])
        self.drank_box.value = min(self.drank_box.value, self.drank_box.max)
        self._context_changed()
        self.refresh()
        self._show_setting()

    def _answer_layer_question(self, nothing_to: str) -> int:
        """The loaded edit's other layer, the question about it taken away (UserError when there is none)."""
        if self.other_layer is None:
            raise UserError(f'the loaded edit was made for this layer: nothing to {nothing_to}')
        layer = self.other_layer
        self.ask_layer(None)
        return layer

    @reports_errors('Switch layer')
    def switch_to_file_layer(self, _button=None) -> None:
        """Switches the app to the layer the loaded edit was made for; Execute Change and Erase then run there."""
        if self.other_layer is not None:
            self.switch_layer(self.other_layer)
        layer = self._answer_layer_question('switch')
        self.show_message(f'now rewriting layer {layer} (rank {self.rank_box.value}, {self.solver_box.value}): click '
                          f'{"Erase" if "object" not in self.request else "Execute Change"} to apply the edit')

    @reports_errors('Apply here anyway')
    def override_layer(self, _button=None) -> None:
        """Allows the loaded edit at this app's layer, although it was made for another."""
        layer = self._answer_layer_question('override')
        self.show_message(f'the edit made for layer {layer} will be applied at layer {self.gw.layernum}: its regions '
                          'and rank were chosen for the other layer; the result shows its held-out change',
                          warning=True)

    @reports_errors('Export')
    def export(self, _button=None) -> None:
        path = export_path(self.export_box.value)
        if path.exists():
            self._ask_overwrite(path, self._write_export, 'type another file name to export to')
            return
        self._write_export(path)

    def _write_export(self, path: Path) -> None:
        save_generator(self.gw.model, path)
        self.download_link.value = download_link(path)
        self.show_message(f'exported the rewritten generator to {path}' +
                          ('' if self.download_link.value else f' (over {DOWNLOAD_LIMIT >> 20} MB: no download link; '
                           'copy the file from there)'))
