from .instance_graph import (StructuredInstanceGraphLoss, edge_loss, edge_matrix,
                             mine_hard_backgrounds, node_loss)

__all__ = ['StructuredInstanceGraphLoss', 'edge_loss', 'edge_matrix', 'mine_hard_backgrounds',
           'node_loss']
