"""Atomic models (PDB/mmCIF, gzipped or not) to density maps, with gemmi's electron scattering factors.

The density is computed by gemmi on a grid ``oversampling`` times finer than the target, then band-limited to the
target grid's Nyquist frequency by cropping its centred Fourier transform, so the map carries no aliasing. The
model's centre of mass is placed at the box centre (index ``D // 2``, :mod:`recon.conventions`).
"""

from __future__ import annotations

import os

import gemmi
import numpy as np

from recon import conventions
from recon.errors import fail


def read_model(path, chains: str = "") -> gemmi.Structure:
    """The model at ``path``; with ``chains`` (chain names, one character each, e.g. ``"ABCDEFGHIJKLMN"``), only
    those chains."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise fail(path, "file not found")
    try:
        structure = gemmi.read_structure(path)
    except Exception as e:
        raise fail(path, f"not a readable atomic model ({str(e).splitlines()[0] if str(e) else type(e).__name__})"
                   ) from None
    if chains:
        missing = sorted(set(chains) - {ch.name for ch in structure[0]})
        if missing:
            raise fail(path, f"the model has no chain {', '.join(missing)}")
        for model in structure:
            for name in sorted({ch.name for ch in model} - set(chains)):
                model.remove_chain(name)
    if len(structure) == 0 or structure[0].count_atom_sites() == 0:
        raise fail(path, "atomic model contains no atoms")
    structure.remove_waters()
    structure.remove_hydrogens()
    return structure


def model_extent_angstrom(structure: gemmi.Structure) -> float:
    """Largest distance of an atom from the model's centre of mass (Angstrom)."""
    centre = structure[0].calculate_center_of_mass()
    pos = np.array([[a.pos.x, a.pos.y, a.pos.z] for ch in structure[0] for r in ch for a in r])
    return float(np.sqrt(np.max(np.sum((pos - [centre.x, centre.y, centre.z]) ** 2, axis=1))))


def model_to_density(structure: gemmi.Structure, box_size: int, pixel_size_angstrom: float,
                     oversampling: int = 2, centre=None) -> np.ndarray:
    """``(D, D, D)`` float32 ``[z, y, x]`` density of the first model, band-limited to Nyquist, with ``centre``
    (a ``gemmi.Position``; default: the model's centre of mass) at the box centre."""
    st = structure.clone()
    fine = oversampling * box_size
    spacing = pixel_size_angstrom / oversampling
    length = fine * spacing
    st.cell = gemmi.UnitCell(length, length, length, 90, 90, 90)
    st.spacegroup_hm = "P 1"
    centre = st[0].calculate_center_of_mass() if centre is None else centre
    target = (fine // 2) * spacing
    shift = gemmi.Position(target - centre.x, target - centre.y, target - centre.z)
    for model in st:
        for chain in model:
            for residue in chain:
                for atom in residue:
                    atom.pos = atom.pos + shift
    calc = gemmi.DensityCalculatorE()
    calc.d_min = 2.0 * spacing
    calc.grid.setup_from(st)
    calc.grid.set_size(fine, fine, fine)
    calc.initialize_grid()
    calc.grid.set_size(fine, fine, fine)
    calc.add_model_density_to_grid(st[0])
    grid = np.array(calc.grid, copy=True)  # [x, y, z]
    if grid.shape != (fine,) * 3:
        raise RuntimeError(f"gemmi grid has shape {grid.shape}, expected {(fine,) * 3}")
    fine_map = np.transpose(grid, (2, 1, 0))
    ft = conventions.centred_fft3(fine_map)
    start = fine // 2 - box_size // 2
    crop = ft[start:start + box_size, start:start + box_size, start:start + box_size]
    volume = conventions.centred_ifft3(crop).real / oversampling**3
    return volume.astype(np.float32)
